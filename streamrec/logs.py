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
    # Read by transformers and huggingface_hub when they are imported (later, lazily).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # The tokenizers' Rust pool warns at every fork of a process that used it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
