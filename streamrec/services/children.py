"""`streamrec` commands as child processes: one launcher for the tests and the benches.

A child runs this interpreter with the environment given (settings travel as
`STREAMREC_*` variables). `isolated_environment` gives one its own topics,
consumer group, database and web port on the running local services, so that
several children and runs share one broker and one database without meeting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from streamrec.services import LocalServices
from streamrec.services.process import free_port, tail
from streamrec.settings import Settings

T = TypeVar("T")


def streamrec_command(*args: str) -> list[str]:
    """The command line of `streamrec ARGS` run by this interpreter."""
    return [sys.executable, "-m", "streamrec.cli", *args]


def run_streamrec(
    *args: str, environment: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess:
    """Run `streamrec ARGS` to its end, its output captured as text."""
    return subprocess.run(
        streamrec_command(*args),
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


class StreamrecProcess:
    """`streamrec ARGS` in the background, its output appended to a log; killable, restartable."""

    def __init__(self, args: Sequence[str], environment: dict[str, str], log_path: Path):
        self.args = list(args)
        self.environment = environment
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the child holds its own descriptor
            self.process = subprocess.Popen(
                streamrec_command(*self.args),
                env={**os.environ, **self.environment},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL when it has not exited within `timeout_s`."""
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class StreamWorker(StreamrecProcess):
    """`streamrec stream worker`, with the settings its environment gives it."""

    def __init__(self, settings: Settings, environment: dict[str, str], log_path: Path):
        super().__init__(["stream", "worker", "--loglevel", "info"], environment, log_path)
        self.settings = settings


def wait_for(
    check: Callable[[], T], timeout_s: float, what: str, child: StreamrecProcess | None = None
) -> T:
    """Poll until `check()` returns a truthy value, and return it. Raises TimeoutError, or
    RuntimeError as soon as `child` has exited, either with the end of the child's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if child is not None and not child.running():
            code = child.process.returncode if child.process else None
            raise RuntimeError(
                f"`streamrec {' '.join(child.args)}` exited ({code}) while waiting for "
                f"{what}\n{tail(child.log_path, 8000)}"
            )
        time.sleep(0.25)
    end = tail(child.log_path, 8000) if child else ""
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}\n{end}")


def services_environment(launcher: LocalServices) -> dict[str, str]:
    """Variables that make a child use this launcher's data directory, and so its services."""
    return {
        "STREAMREC_DATA_DIR": str(launcher.settings.data_dir),
        "STREAMREC_CACHE_DIR": str(launcher.settings.cache_dir),
    }


def isolated_environment(launcher: LocalServices) -> dict[str, str]:
    """Variables giving a child its own topics, consumer group, database and web port."""
    settings, suffix = launcher.connected_settings(), uuid.uuid4().hex[:8]
    return {
        "STREAMREC_STREAMS__APP_ID": f"stream-{suffix}",
        "STREAMREC_STREAMS__WEB_PORT": str(free_port()),
        "STREAMREC_CLICKHOUSE__DATABASE": f"test_{suffix}",
        "STREAMREC_KAFKA__INTERACTIONS_TOPIC": f"interactions-{suffix}",
        "STREAMREC_KAFKA__ITEMS_TOPIC": f"items-{suffix}",
        "STREAMREC_KAFKA__DLQ_TOPIC": f"interactions.dlq-{suffix}",
        "STREAMREC_KAFKA__TRAINING_EXAMPLES_TOPIC": f"training-examples-{suffix}",
        "STREAMREC_KAFKA__KNOWLEDGE_REQUESTS_TOPIC": f"knowledge-requests-{suffix}",
        "STREAMREC_KAFKA__MODEL_UPDATES_TOPIC": f"model-updates-{suffix}",
        "STREAMREC_KAFKA__HISTORY_UPDATES_TOPIC": f"history-updates-{suffix}",
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMREC_CLICKHOUSE__HOST": settings.clickhouse.host,
        "STREAMREC_CLICKHOUSE__PORT": str(settings.clickhouse.port),
        **services_environment(launcher),
    }


@contextmanager
def environment_set(variables: dict[str, str]) -> Iterator[None]:
    """This process's environment with `variables`, restored on exit: settings built inside
    are the ones a child given the same variables runs under."""
    previous = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
