"""Helpers for tests and benchmarks on the real services: an isolated stream worker, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from streamrec.db import connect
from streamrec.services import free_port
from streamrec.settings import Settings


def wait_for(check, timeout_s: float, what: str, worker=None):
    """Poll until `check()` returns a truthy value; fail with the worker's log otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    tail = worker.log()[-8000:] if worker else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")


def count_rows(settings: Settings, table: str, final: bool = False) -> int:
    client = connect(settings)
    try:
        return client.execute(f"SELECT count() FROM {table}{' FINAL' if final else ''}")[0][0]
    finally:
        client.disconnect()


class StreamWorker:
    """`streamrec stream worker` as a child process, killable and restartable."""

    def __init__(self, settings: Settings, environment: dict[str, str], log_path):
        self.settings = settings
        self.environment = environment
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", "stream", "worker", "--loglevel", "info"],
            env={**os.environ, **self.environment},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def isolated_environment(settings: Settings, base_environment: dict[str, str]) -> dict[str, str]:
    """Variables giving a worker its own topics, consumer group, database and web port."""
    suffix = uuid.uuid4().hex[:8]
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
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMREC_CLICKHOUSE__HOST": settings.clickhouse.host,
        "STREAMREC_CLICKHOUSE__PORT": str(settings.clickhouse.port),
        **base_environment,
    }


def store_history(settings, user_id: int, items: list[int], prefix: str) -> None:
    """Write one user's clicks straight into ClickHouse, a millisecond apart (oldest first),
    as the stream worker would have stored them."""
    from streamrec.db import connect

    client = connect(settings)
    start = int(time.time() * 1000) - 60_000
    rows = [
        (f"{prefix}-{step}", user_id, item, 1, None, start // 1000, start + step)
        + ([], [], 0, step, 0)
        for step, item in enumerate(items)
    ]
    client.execute(
        "INSERT INTO interactions (event_id, user_id, item_id, event_type, value, timestamp, "
        "timestamp_ms, context_keys, context_values, source_partition, source_offset, "
        "ingested_ms) VALUES",
        rows,
    )
    client.disconnect()
