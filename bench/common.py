"""What the benches share: their command line, logging and threads, the local services
of a run on topics and a database of its own, and the summary of per-seed figures."""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from streamrec.db import migrate
from streamrec.services import LocalServices
from streamrec.services.children import isolated_environment
from streamrec.settings import Settings
from streams.topics import ensure_topics


def parser(name: str, doc: str, *, dataset: bool = False, threads: bool = False):
    """`python -m bench.NAME`'s parser: its docstring as help and `--json`, the result's
    path; `--dataset` and `--threads` (torch threads) when asked for."""
    made = argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    made.add_argument("--json", required=True, type=Path, help="Where to write the result.")
    if dataset:
        made.add_argument("--dataset", default="ml-100k")
    if threads:
        made.add_argument("--threads", type=int, default=0, help="Torch threads (0: default).")
    return made


def use_threads(count: int) -> None:
    """Torch threads for this process; 0 keeps torch's default."""
    if count:
        import torch

        torch.set_num_threads(count)


def log_progress() -> None:
    """Progress lines with the time on stderr, the bench's own and its libraries'."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)


def percentile(values, q: float) -> float:
    """The q-th percentile (0-100, linear between ranks), one definition for every bench;
    NaN for no values."""
    values = list(values)
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def evaluation_row(
    dataset: str, model: str, variant: str, seeds, per_seed: list[dict], note="", **extra
):
    """The project's evaluation row: the mean and (population) std over seeds of every
    numeric figure of the first seed's metrics, then any `extra` keys and the `note`."""
    names = [key for key, value in per_seed[0].items() if isinstance(value, int | float)]
    return {
        "dataset": dataset,
        "model": model,
        "variant": variant,
        "seeds": list(seeds),
        "metrics": {name: statistics.fmean(m[name] for m in per_seed) for name in names},
        "std": {name: statistics.pstdev([m[name] for m in per_seed]) for name in names},
        **extra,
        **({"note": note} if note else {}),
    }


@contextmanager
def local_services(prefix: str) -> Iterator[tuple[Path, LocalServices]]:
    """Kafka and ClickHouse started in a new temporary folder (also the run's scratch
    folder, returned with the launcher), stopped at the end."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    launcher = LocalServices(Settings(data_dir=workdir / "data"))
    try:
        launcher.start()
        # On a machine shared with other runs, a server that lost the race for a port it
        # had checked free exits within seconds (another run's server answered the ping):
        # started again, it gets ports of its own.
        time.sleep(3)
        if not all(entry["running"] for entry in launcher.status().values()):
            launcher.stop()
            launcher.start()
        yield workdir, launcher
    finally:
        launcher.stop()


def isolated_settings(launcher: LocalServices, **variables: str) -> tuple[Settings, dict]:
    """Settings on topics and a database of their own (created), and the environment that
    gives a child process the same; set in this process too, so that what the bench reads
    itself and what its children write meet. `variables` add settings to both."""
    environment = {**isolated_environment(launcher), **variables}
    os.environ.update(environment)
    settings = Settings()
    migrate(settings)
    ensure_topics(settings)
    return settings, environment
