"""One logging set-up for every streamrec process: ours at INFO, the libraries' at WARNING.

The CLI calls `configure` once, before any command runs. `streamrec up` runs
its planes as child processes of the same CLI; they inherit the choice through
the environment (`STREAMREC_VERBOSE`), so `streamrec -v up` is verbose in
every process. Verbose means DEBUG for ours and INFO for the libraries'.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "STREAMREC_VERBOSE"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

# Libraries that narrate their normal work at INFO (connections, rebalances, loaders);
# faiss's loader says which build it loads at import, always after `configure`.
LIBRARIES = (
    "aiohttp",
    "aiokafka",
    "asyncio",
    "clickhouse_driver",
    "faiss",
    "faust",
    "filelock",
    "grpc",
    "httpcore",
    "httpx",
    "huggingface_hub",
    "kafka",
    "mode",
    "peft",
    "torch",
    "transformers",
    "urllib3",
)

# Library warnings about their own routine retries and timings: the normal path raises
# them and the operation then succeeds (a real failure still raises, and is reported).
# Logger -> fragments of the messages.
ROUTINE_WARNINGS = {
    "kafka.cluster": (
        # kafka-python retries a metadata refresh while its connection is busy: our
        # producers allow one request in flight per connection, for ordering.
        "No node available for metadata refresh",
        # A consumer closed while its background metadata refresh was in flight (the ops
        # page's sampler as the page stops): the refresh is cancelled, nothing failed.
        "Metadata refresh: failed Cancelled",
    ),
    # kafka-python times each step of its network thread against a 0.1 s developer
    # threshold, which compressing a batch on a loaded machine passes.
    "kafka.net.selector": ("threshold). It is blocking the event loop",),
}


class _DropRoutine(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def verbose_requested() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def configure(verbose: bool = False) -> None:
    """Set the levels, the format and the library switches; child processes inherit them."""
    verbose = verbose or verbose_requested()
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=FORMAT,
        datefmt=DATE_FORMAT,
        force=True,
    )
    library_level = logging.INFO if verbose else logging.WARNING
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(library_level)
    for name, fragments in ROUTINE_WARNINGS.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropRoutine)]:
            logger.removeFilter(old)
        if not verbose:
            logger.addFilter(_DropRoutine(fragments))
    # Read by transformers and huggingface_hub when they are imported (later, lazily), and by
    # gRPC's C core (its INFO lines, e.g. a peer's GOAWAY at shutdown, go to stderr).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    os.environ.setdefault("GRPC_VERBOSITY", "INFO" if verbose else "ERROR")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # The tokenizers' Rust pool warns at every fork of a process that used it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
