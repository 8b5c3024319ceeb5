"""The knowledge job on the real Kafka and ClickHouse: a new catalog item gets knowledge,
a vector and a place in a new recommender version that the server recommends it from; a
run killed with SIGKILL leaves the next run only what is missing.

The LLM is a tiny random Llama over the real SmolLM2 tokenizer (saved as a model folder,
so the job loads it by path like any LLM); the text encoder is the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import numpy as np
import pytest
import torch

from models.knowledge.prompts import ItemInfo
from streamrec.db import connect, migrate
from streamrec.jobs import list_runs
from streamrec.registry import ModelRegistry, VersionMetadata
from streamrec.services.children import (
    StreamrecProcess,
    StreamWorker,
    environment_set,
    isolated_environment,
    wait_for,
)
from streamrec.settings import Settings
from streamrec.v1 import recommender_pb2, recommender_pb2_grpc
from streams.producer import ItemProducer
from streams.topics import ensure_topics
from tests.unit.knowledge_helpers import real_tokenizer, tiny_llm

KNOWN_ITEMS = [101, 102, 103]  # in the first recommender version
NEW_ITEM = 9001
TRAINER_ITEM = 9101  # met by the online trainer before the job wrote its knowledge
BACKFILL = list(range(5001, 5031))  # catalog items written straight to ClickHouse
ENCODER_DIM = 384
TINY_SASREC = {
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "max_seq_length": 8,
}


def _settings_from(environment: dict[str, str]) -> Settings:
    with environment_set(environment):
        return Settings()


# The job sets one thread too (knowledge.threads): the fixture restores the count after.
pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.fixture(scope="module")
def world(services, tmp_path_factory):
    folder = tmp_path_factory.mktemp("knowledge")
    tokenizer = real_tokenizer()
    tiny = tiny_llm(tokenizer)
    tiny.save_pretrained(folder / "tiny-llm")
    tokenizer.save_pretrained(folder / "tiny-llm")
    environment = {
        **isolated_environment(services.launcher),
        "STREAMREC_STREAMS__SINK_FLUSH_INTERVAL_S": "0.2",
        "STREAMREC_REGISTRY__ROOT": str(folder / "registry"),
        "STREAMREC_KNOWLEDGE__LLM_PATH": str(folder / "tiny-llm"),
        "STREAMREC_KNOWLEDGE__CACHE_PATH": str(folder / "cache.sqlite"),
        "STREAMREC_KNOWLEDGE__BATCH_SIZE": "2",
        "STREAMREC_KNOWLEDGE__JOB_WRITE_BATCH": "2",
        "STREAMREC_KNOWLEDGE__MAX_NEW_TOKENS": "12",
        "STREAMREC_KNOWLEDGE__JOB_POLL_TIMEOUT_MS": "500",
        "STREAMREC_KNOWLEDGE__THREADS": "1",
        "STREAMREC_SERVING__PORT": "0",
    }
    settings = _settings_from(environment)
    migrate(settings)
    ensure_topics(settings)
    # The recommender in service before the new items: both knowledge channels, three items.
    from models.sequential import build_recommender

    torch.manual_seed(0)
    knowledge, facts = (
        torch.nn.functional.normalize(torch.randn(len(KNOWN_ITEMS) + 1, ENCODER_DIM), dim=1)
        for _ in range(2)
    )
    knowledge[0] = facts[0] = 0
    model = build_recommender(
        "sasrec", len(KNOWN_ITEMS) + 1, dict(TINY_SASREC), knowledge, facts=facts
    )
    model.save_pretrained(folder / "v1", np.asarray([0, *KNOWN_ITEMS], dtype=np.int64))
    first = ModelRegistry.from_settings(settings).add(
        "seralm", folder / "v1", VersionMetadata(extra={"note": "base"})
    )
    return {"settings": settings, "environment": environment, "folder": folder, "first": first}


def _knowledge_rows(settings: Settings, llm_version: str) -> list[tuple[int, str, list[float]]]:
    """(item_id, text, vector) of every item_knowledge row of an LLM version."""
    client = connect(settings)
    try:
        return client.execute(
            "SELECT item_id, text, vector FROM item_knowledge WHERE llm_version = %(llm)s",
            {"llm": llm_version},
        )
    finally:
        client.disconnect()


def _request_count(settings: Settings) -> int:
    from kafka import KafkaConsumer, TopicPartition

    from streamrec.services import kafka_bootstrap

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap(settings))
    try:
        topic = settings.kafka.knowledge_requests_topic
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


async def _recommend(settings: Settings, request) -> recommender_pb2.RecommendResponse:
    from serving.recommender import RecommenderServicer
    from serving.server import RECOMMENDER, start_server

    servicer = RecommenderServicer(settings)
    server, port = await start_server(settings, {RECOMMENDER: servicer})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            return await stub.Recommend(request, timeout=30)
    finally:
        await server.stop(None)


def test_new_item_event_gets_knowledge_a_vector_and_is_recommended(world, tmp_path):
    from models.sequential import SequentialRecommender
    from workers.knowledge_job import KnowledgeJob

    settings = world["settings"]
    worker = StreamWorker(settings, world["environment"], tmp_path / "worker.log")
    worker.start()
    try:
        with ItemProducer.from_settings(settings) as producer:
            producer.send(item_id=NEW_ITEM, title="Heat", year=1995, categories=["Crime"])
        wait_for(lambda: _request_count(settings) >= 1, 90, "the knowledge request", worker)
    finally:
        worker.stop()

    job = KnowledgeJob(settings, progress=False)
    outcome = job.run_once()
    assert (outcome.requested, outcome.ok, outcome.failed) == (1, 1, 0)

    rows = _knowledge_rows(settings, job.llm.version)
    assert [item for item, _, _ in rows] == [NEW_ITEM]
    ((_, text, vector),) = rows
    vector = np.asarray(vector, dtype=np.float32)
    assert vector.shape == (ENCODER_DIM,) and abs(np.linalg.norm(vector) - 1) < 1e-4
    # The vector is the LLM channel: the LLM's knowledge alone.
    np.testing.assert_allclose(job.encoder.encode([text])[0], vector, atol=1e-5)

    (run,) = list_runs(settings, kind="knowledge", limit=1)
    assert (run.status, run.items_ok, run.llm_version) == ("succeeded", 1, job.llm.version)
    # What the run cost, in its summary and its job_runs row: prefill and decode time, tokens,
    # the prefix cache's hit rate, items/s.
    cost = outcome.generation
    assert json.loads(run.stats) == cost == run.as_dict()["stats"]
    assert cost["items"] == 1 and cost["prefix_hit_rate"] == 1.0
    assert cost["prefill_s"] > 0 and cost["decode_s"] > 0 and cost["items_per_s"] > 0
    # One item: the shared prefix, computed on this first batch, then the item's own tokens.
    assert cost["prefilled_tokens"] == cost["prompt_tokens"] > 0
    assert 0 < cost["generated_tokens"] <= 12  # knowledge.max_new_tokens

    # A new seralm version holds the item, its knowledge, and scores it.
    assert outcome.published is not None
    version = ModelRegistry.from_settings(settings).latest("seralm")
    assert version.version == outcome.published
    assert version.metadata["parent"] == world["first"].version
    assert version.metadata["llm_version"] == job.llm.version
    loaded = SequentialRecommender.from_pretrained(version.path)
    assert loaded.item_ids.tolist() == [0, *KNOWN_ITEMS, NEW_ITEM]
    np.testing.assert_allclose(loaded.model.fusion.knowledge[-1].numpy(), vector, atol=1e-6)
    # Its facts channel: the catalog's facts of the item, encoded alone.
    facts = job.template.facts(ItemInfo(NEW_ITEM, "Heat", 1995, ("Crime",)))
    assert facts == "Heat (1995). Genres: Crime."
    np.testing.assert_allclose(
        loaded.model.fusion.facts[-1].numpy(), job.encoder.encode([facts])[0], atol=1e-5
    )
    assert version.metadata["knowledge_channels"]["llm"]["llm_version"] == job.llm.version
    scores = loaded.model.full_scores(torch.tensor([[1, 2, 3]]), torch.tensor([3]))
    assert torch.isfinite(scores[0, -1])

    # The server loads that version and recommends the item, which no one has interacted with.
    reply = asyncio.run(
        _recommend(settings, recommender_pb2.RecommendRequest(history=KNOWN_ITEMS, k=4))
    )
    assert reply.model_version == version.version
    assert [item.item_id for item in reply.items] == [NEW_ITEM]  # the others are history
    assert np.isfinite(reply.items[0].score)

    # Nothing is missing any more: a second run does nothing and publishes nothing.
    again = job.run_once()
    assert (again.requested, again.ok, again.published) == (0, 0, None)


def test_run_killed_midway_leaves_the_next_run_only_what_is_missing(world, tmp_path):
    from models.sequential import SequentialRecommender
    from workers.knowledge_job import KnowledgeJob
    from workers.knowledge_pipeline import load_knowledge_llm

    settings = world["settings"]
    client = connect(settings)
    now_ms = int(time.time() * 1000)
    client.execute(
        "INSERT INTO items (item_id, title, year, categories, description, attribute_keys, "
        "attribute_values, deleted, updated_ms) VALUES",
        [(item, f"Film {item}", 1990, ["Drama"], "", [], [], 0, now_ms) for item in BACKFILL],
    )
    client.disconnect()
    llm_version = load_knowledge_llm(settings).version

    def written() -> int:
        return len(
            [item for item, _, _ in _knowledge_rows(settings, llm_version) if item in BACKFILL]
        )

    job = StreamrecProcess(
        ["worker", "knowledge", "--once"], world["environment"], tmp_path / "job.log"
    )
    job.start()
    try:
        deadline = time.monotonic() + 180
        while written() < 4 and job.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.running(), "the run ended before it could be killed"
        job.kill()
    finally:
        if job.running():
            job.kill()
    # An insert the process had sent before it died may still land: wait until none does.
    before, previous = written(), -1
    while before != previous:
        time.sleep(1.0)
        before, previous = written(), before
    assert 4 <= before < len(BACKFILL)
    killed = list_runs(settings, kind="knowledge", limit=1)[0]
    assert killed.status == "running"  # it never wrote its end (lost, after the heartbeat)

    outcome = KnowledgeJob(settings, progress=False).run_once()
    assert (outcome.ok, outcome.failed) == (len(BACKFILL) - before, 0)
    cost = outcome.generation  # several items share the prefix prefilled once
    assert 1 < cost["items"] <= outcome.ok and cost["prefix_hit_rate"] == 1.0  # some cached
    assert 0 < cost["prefilled_tokens"] < cost["prompt_tokens"]
    rows = [item for item, _, _ in _knowledge_rows(settings, llm_version) if item in BACKFILL]
    assert sorted(rows) == BACKFILL  # every item, each exactly once
    published = ModelRegistry.from_settings(settings).get("seralm", outcome.published)
    ids = SequentialRecommender.from_pretrained(published.path).item_ids.tolist()
    assert set(BACKFILL) <= set(ids) and len(ids) == len(set(ids))


def test_an_item_the_trainer_added_with_a_zero_llm_row_gets_its_knowledge_when_written(
    world, tmp_path
):
    """The online trainer meets an item before the job has written its knowledge: a zero
    LLM row. The job's next run writes that knowledge and publishes a version whose LLM row
    of the item holds it; the facts, every other row and every weight stay as they were."""
    from models.sequential import SequentialRecommender
    from streamrec.registry import VersionMetadata, publish
    from workers.knowledge_job import KnowledgeJob, rows_version
    from workers.trainer import OnlineTrainer
    from workers.trainer_knowledge import inherited_provenance

    settings = world["settings"]
    client = connect(settings)
    client.execute(
        "INSERT INTO items (item_id, title, year, categories, description, attribute_keys, "
        "attribute_values, deleted, updated_ms) VALUES",
        [(TRAINER_ITEM, "Ronin", 1998, ["Action"], "", [], [], 0, int(time.time() * 1000))],
    )
    client.disconnect()
    # The trainer's own growing, then a version of it as the trainer publishes one.
    trainer = OnlineTrainer(settings)
    trainer.load_latest(wait=False)
    trainer.grow_items([TRAINER_ITEM])
    trainer.model.save_pretrained(tmp_path / "grown", trainer.item_ids, extra=trainer.extra)
    grown = publish(
        settings,
        "seralm",
        tmp_path / "grown",
        VersionMetadata(
            parent=trainer.version.version,
            llm_version=trainer.version.metadata.get("llm_version"),
            extra={"source": "online-trainer", **inherited_provenance(trainer.version.metadata)},
        ),
    )
    before = SequentialRecommender.from_pretrained(grown.path)
    row = before.item_ids.tolist().index(TRAINER_ITEM)
    assert not before.model.fusion.knowledge[row].any()  # no knowledge yet: zeros
    assert before.model.fusion.facts[row].any()  # its catalog facts

    job = KnowledgeJob(settings, progress=False)
    outcome = job.run_once()
    assert (outcome.ok, outcome.failed) == (1, 0)  # the one item without knowledge
    ((_, _, vector),) = [
        found for found in _knowledge_rows(settings, job.llm.version) if found[0] == TRAINER_ITEM
    ]
    assert outcome.published is not None
    version = ModelRegistry.from_settings(settings).latest("seralm")
    assert version.version == outcome.published
    assert version.metadata["parent"] == grown.version
    assert version.metadata["knowledge_items_added"] == 0
    assert version.metadata["knowledge_items_filled"] == 1
    llm = version.metadata["knowledge_channels"]["llm"]
    assert (llm["llm_version"], llm["prompt_version"]) == (
        job.llm.version,
        rows_version(job.template.version),
    )
    after = SequentialRecommender.from_pretrained(version.path)
    assert after.item_ids.tolist() == before.item_ids.tolist()
    knowledge = after.model.fusion.knowledge
    np.testing.assert_allclose(knowledge[row].numpy(), vector, atol=1e-6)
    others = [index for index in range(len(knowledge)) if index != row]
    assert torch.equal(knowledge[others], before.model.fusion.knowledge[others])
    assert torch.equal(after.model.fusion.facts, before.model.fusion.facts)
    trained, kept = after.model.state_dict(), before.model.state_dict()
    assert trained.keys() == kept.keys()
    assert all(torch.equal(trained[name], kept[name]) for name in kept)  # nothing retrained

    # The row is filled now: the next run has nothing to write and publishes nothing.
    assert job.run_once().published is None


def test_a_run_longer_than_its_poll_interval_would_lose_its_group(world, monkeypatch):
    """The job polls only to drain its requests and commits them at the run's end; a run
    longer than its consumer's poll interval is dropped from its group and fails its
    commit. The setting is what keeps a catalog run (minutes to hours) in its group: here a
    3 s interval and a 6 s run reproduce the failure, and the default interval covers a
    run of hours."""
    from kafka.errors import CommitFailedError

    from streamrec.terminal import with_overrides
    from workers import knowledge_job
    from workers.knowledge_job import KnowledgeJob

    assert world["settings"].knowledge.job_max_poll_interval_s >= 3600
    settings = with_overrides(
        world["settings"], "knowledge", job_max_poll_interval_s=3.0, job_group="knowledge-short"
    )
    client = connect(settings)
    client.execute(
        "INSERT INTO items (item_id, title, year, categories, description, attribute_keys, "
        "attribute_values, deleted, updated_ms) VALUES",
        [(item, f"Slow {item}", 1990, ["Drama"], "", [], [], 0, 1) for item in (7001, 7002)],
    )
    client.disconnect()
    write = knowledge_job.write_knowledge

    def slow_write(*args, **kwargs):
        time.sleep(6.0)
        return write(*args, **kwargs)

    monkeypatch.setattr(knowledge_job, "write_knowledge", slow_write)
    with pytest.raises(CommitFailedError):
        KnowledgeJob(settings, progress=False).run_once()
