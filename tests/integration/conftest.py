"""A stream worker subprocess per test, on its own topics, consumer group and database."""

from __future__ import annotations

import os

import pytest

from streamrec.db import migrate
from streamrec.settings import Settings
from streams.topics import ensure_topics
from tests.integration.helpers import StreamWorker, isolated_environment


@pytest.fixture
def stream_worker(services, tmp_path):
    """Settings isolated by a unique suffix, and a (not yet started) worker using them."""
    overrides = {
        **isolated_environment(services.settings, services.environment()),
        "STREAMREC_STREAMS__SINK_FLUSH_INTERVAL_S": "0.2",
        # A killed worker's partitions come back after this, not faust's 60 s default.
        "STREAMREC_STREAMS__SESSION_TIMEOUT_S": "10",
    }
    previous = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        settings = Settings()
        migrate(settings)
        ensure_topics(settings)
        worker = StreamWorker(settings, overrides, tmp_path / "worker.log")
        yield worker
        worker.stop()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
