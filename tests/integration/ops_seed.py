"""A system's recent past for the ops page tests, written to the real ClickHouse, Kafka and
registry: a catalog partly covered by knowledge, item failures, requests waiting, a mix of
job runs of three kinds (succeeded, failed, stopped, lost, running), published and
rejected model versions, and lag and dead-letter samples."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamrec.coverage import record_failures, record_target
from streamrec.db import connect, migrate
from streamrec.jobs import JOB_COLUMNS, JobRecorder
from streamrec.registry import ModelRegistry, VersionMetadata
from streamrec.settings import Settings

LLM, PROMPT = "smollm2@test", "seralm-movie-v1"
CATALOG = 10
COVERED = (1, 2, 3, 4, 5, 6)
FAILED_ITEMS = (7, 8)
ITEM_REASON = "RuntimeError: CUDA out of memory"
PENDING = 3
KNOWLEDGE_ERROR = "2 items failed; last error: RuntimeError: CUDA out of memory"
REJECTED_NDCG = 0.0612

log = logging.getLogger("workers.knowledge_job")


@dataclass
class Seeded:
    settings: Settings
    environment: dict[str, str]  # selects the same database, topics and registry
    failed_run: str  # a failed knowledge run, with a log tail
    running_run: str
    lost_run: str
    kinds: tuple[str, ...]


def isolated_settings(services, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """Settings on a database, topics and registry of the test's own, and the environment
    that selects them."""
    suffix = uuid.uuid4().hex[:8]
    settings = services.settings.model_copy(deep=True)
    settings.clickhouse.database = f"ops_{suffix}"
    settings.kafka.knowledge_requests_topic = f"knowledge-requests-{suffix}"
    settings.kafka.dlq_topic = f"interactions.dlq-{suffix}"
    settings.knowledge.job_group = f"knowledge-{suffix}"
    settings.ops.sampler_group = f"ops-page-{suffix}"
    settings.registry.root = str(tmp_path / "registry")
    migrate(settings)
    environment = {
        **services.environment(),
        "STREAMREC_CLICKHOUSE__HOST": settings.clickhouse.host,
        "STREAMREC_CLICKHOUSE__PORT": str(settings.clickhouse.port),
        "STREAMREC_CLICKHOUSE__DATABASE": settings.clickhouse.database,
        "STREAMREC_REGISTRY__ROOT": settings.registry.root,
        "STREAMREC_KAFKA__KNOWLEDGE_REQUESTS_TOPIC": settings.kafka.knowledge_requests_topic,
        "STREAMREC_KAFKA__DLQ_TOPIC": settings.kafka.dlq_topic,
        "STREAMREC_KNOWLEDGE__JOB_GROUP": settings.knowledge.job_group,
        "STREAMREC_OPS__SAMPLER_GROUP": settings.ops.sampler_group,
    }
    return settings, environment


def _produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    from streamrec.services import kafka_bootstrap

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap(settings))
    for value in values:
        producer.send(topic, value)
    producer.flush()
    producer.close()


def dead_letters(settings: Settings, reasons: list[str]) -> None:
    from streamrec.v1 import events_pb2

    now = int(time.time() * 1000)
    letters = [
        events_pb2.DeadLetter(reason=reason, timestamp_ms=now).SerializeToString()
        for reason in reasons
    ]
    _produce(settings, settings.kafka.dlq_topic, letters)


def _catalog(client, hours_ago: float) -> None:
    now = time.time()
    items = [
        (i, f"Film {i}", 1990 + i, ["Drama"], "", [], [], 0, int((now - hours_ago * 3600) * 1000))
        for i in range(1, CATALOG + 1)
    ]
    client.execute(
        "INSERT INTO items (item_id, title, year, categories, description, attribute_keys, "
        "attribute_values, deleted, updated_ms) VALUES",
        items,
    )
    stamp = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
    knowledge = [(i, LLM, PROMPT, "text", [0.0], stamp, int(now * 1000)) for i in COVERED]
    knowledge.append((9, "an-older-llm", PROMPT, "text", [0.0], stamp, int(now * 1000)))
    client.execute(
        "INSERT INTO item_knowledge (item_id, llm_version, prompt_version, text, vector, "
        "created_at, created_ms) VALUES",
        knowledge,
    )


def _past_run(client, kind, status, started, seconds, ok, error="", heartbeat_ms=None) -> str:
    run_id = f"{kind}-{uuid.uuid4().hex[:10]}"
    finished = started + seconds
    row = (
        run_id,
        kind,
        status,
        int(started),
        int(finished),
        ok,
        0,
        0,
        ok / seconds if seconds else 0.0,
        LLM if kind == "knowledge" else "",
        error,
        heartbeat_ms if heartbeat_ms is not None else int(finished * 1000),
        "{}",
    )
    client.execute(f"INSERT INTO job_runs ({JOB_COLUMNS}) VALUES", [row])
    return run_id


def _models(settings: Settings, tmp_path: Path, runs_client) -> None:
    """Published recommender versions spread over the last hours, and two rejections."""
    from workers.trainer_gate import rejection

    registry = ModelRegistry.from_settings(settings)
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "weights.bin").write_bytes(b"0")
    now = time.time()
    for hours_ago, ndcg in ((5, 0.071), (3, 0.079), (1, 0.088)):
        version = registry.add(
            settings.recommender.family,
            folder,
            VersionMetadata(metrics={"heldout_ndcg@10": ndcg}, extra={"source": "test"}),
        )
        metadata = version.path / "metadata.json"
        record = json.loads(metadata.read_text())
        record["created_at_ms"] = int((now - hours_ago * 3600) * 1000)
        metadata.write_text(json.dumps(record))
    for hours_ago, candidate in ((4, REJECTED_NDCG), (2, 0.065)):
        _past_run(
            runs_client,
            "trainer",
            "failed",
            now - hours_ago * 3600,
            40,
            500,
            rejection(candidate, 0.079, None, 0.005),
        )


def seed(settings: Settings, environment: dict[str, str], tmp_path: Path) -> Seeded:
    client = connect(settings)
    try:
        _catalog(client, hours_ago=30)
        now = time.time()
        for day in range(7, 1, -1):
            _past_run(client, "knowledge", "succeeded", now - day * 86400, 600 + 40 * day, 1500)
        for hour in range(12, 3, -1):
            _past_run(client, "trainer", "succeeded", now - hour * 3600, 60 + hour, 4000)
        _past_run(client, "alignment", "succeeded", now - 30 * 3600, 1800, 2000)
        _past_run(client, "alignment", "stopped", now - 20 * 3600, 300, 100, "stopped by a signal")
        lost = _past_run(client, "alignment", "running", now - 10 * 3600, 900, 50, heartbeat_ms=0)
        running = _past_run(
            client, "trainer", "running", now - 30, 30, 100, heartbeat_ms=int(now * 1000)
        )
        _models(settings, tmp_path, client)
        # A knowledge run that fails as the job does: items recorded failed, the error logged.
        with JobRecorder(settings, "knowledge", llm_version=LLM) as run:
            record_target(client, run.run_id, LLM, PROMPT)
            log.warning("knowledge for items [7, 8] failed")
            record_failures(client, run.run_id, LLM, PROMPT, FAILED_ITEMS, ITEM_REASON)
            run.progress(ok=0, failed=len(FAILED_ITEMS))
            run.fail(KNOWLEDGE_ERROR)
        for minutes_ago, lag in ((50, 120.0), (30, 80.0), (10, 40.0)):
            sampled = int((now - minutes_ago * 60) * 1000)
            client.execute(
                "INSERT INTO ops_samples (figure, label, sampled_ms, value) VALUES",
                [
                    ("lag", "streamrec-stream on interactions", sampled, lag),
                    ("dead_letters", "bad_user_id", sampled, minutes_ago / 10),
                ],
            )
    finally:
        client.disconnect()
    from streamrec.v1 import events_pb2

    requests = [events_pb2.KnowledgeRequest(item_id=i).SerializeToString() for i in (9, 10, 11)]
    _produce(settings, settings.kafka.knowledge_requests_topic, requests)
    kinds = ("alignment", "knowledge", "trainer")
    return Seeded(settings, environment, run.run_id, running, lost, kinds)


@pytest.fixture
def seeded(services, tmp_path):
    from streams.topics import ensure_topics

    settings, environment = isolated_settings(services, tmp_path)
    ensure_topics(settings)
    return seed(settings, environment, tmp_path)


@pytest.fixture
def ops_page(seeded):
    """The status page served from a thread of this process on a free port."""
    from serving.ops import start_status_page

    settings = seeded.settings.model_copy(deep=True)
    settings.ops.page_port = 0
    settings.ops.sample_interval_s = 0  # the seeded samples only
    loop = asyncio.new_event_loop()
    runner, port = loop.run_until_complete(start_status_page(settings))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", seeded
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
