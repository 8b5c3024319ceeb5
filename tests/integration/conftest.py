"""A stream worker subprocess per test, on its own topics, consumer group and database."""

from __future__ import annotations

import pytest

from streamrec.db import migrate
from streamrec.services.children import StreamWorker, environment_set, isolated_environment
from streamrec.settings import Settings
from streams.topics import ensure_topics
from tests.integration.ops_seed import ops_page, seeded  # noqa: F401 (fixtures)


@pytest.fixture
def stream_worker(services, tmp_path):
    """Settings isolated by a unique suffix, and a (not yet started) worker using them."""
    overrides = {
        **isolated_environment(services.launcher),
        "STREAMREC_STREAMS__SINK_FLUSH_INTERVAL_S": "0.2",
        # A killed worker's partitions come back after this, not faust's 60 s default.
        "STREAMREC_STREAMS__SESSION_TIMEOUT_S": "10",
    }
    with environment_set(overrides):
        settings = Settings()
        migrate(settings)
        ensure_topics(settings)
        worker = StreamWorker(settings, overrides, tmp_path / "worker.log")
        yield worker
        worker.stop()
