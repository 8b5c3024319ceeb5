"""The online trainer on the real Kafka, ClickHouse and registry, with a tiny SASRec.

The stream is synthetic but learnable: every user walks the catalog in order
(item k is followed by item k+1), so a model warm-started on that pattern
ranks the next item first, a sane update keeps doing so, and a wild one
(a huge learning rate) forgets it and must not be published.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
import torch
from kafka import KafkaProducer
from prometheus_client import REGISTRY

from streamrec.db import connect, migrate
from streamrec.jobs import FAILED, SUCCEEDED, list_runs
from streamrec.services.children import run_streamrec
from streamrec.v1 import events_pb2
from streams.topics import ensure_topics
from tests.unit.recommender_helpers import TINY_SASREC

CATALOG = [1000 + k for k in range(1, 31)]  # external item ids
NEW_ITEMS = [2001, 2002]  # arrive only with the stream
HISTORY = 5
EXAMPLES_PER_MESSAGE = 20
TINY = {**TINY_SASREC, "max_seq_length": HISTORY, "knowledge_dropout": 0.0}


def walk(start: int, length: int, items: list[int]) -> list[int]:
    return [items[(start + step) % len(items)] for step in range(length)]


def examples_message(rng: np.random.Generator, items: list[int]) -> bytes:
    batch = events_pb2.TrainingExampleBatch()
    for _ in range(EXAMPLES_PER_MESSAGE):
        sequence = walk(int(rng.integers(len(items))), HISTORY + 1, items)
        batch.examples.add(
            event_id=uuid.uuid4().hex,
            user_id=int(rng.integers(1, 500)),
            history=sequence[:-1],
            target_item_id=sequence[-1],
            timestamp_ms=1_790_000_000_000,
        )
    return batch.SerializeToString()


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.fixture(scope="module")
def offline_folder(tmp_path_factory):
    """A tiny SASRec trained offline on the walk (once for the module)."""
    from models.sequential import build_recommender

    torch.manual_seed(0)
    model = build_recommender("sasrec", n_items=len(CATALOG) + 1, config=TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    starts = torch.arange(len(CATALOG)).repeat(4)
    index = torch.arange(HISTORY + 1)
    sequences = (starts.unsqueeze(1) + index) % len(CATALOG) + 1  # item indices 1..30
    for _ in range(60):
        optimizer.zero_grad()
        loss = model.loss(sequences[:, :-1], torch.full((len(starts),), HISTORY), sequences[:, -1])
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("offline")
    model.save_pretrained(folder, np.array([0, *CATALOG], dtype=np.int64))
    return folder


@pytest.fixture
def trainer_settings(services, tmp_path, offline_folder):
    from streamrec.registry import ModelRegistry, VersionMetadata

    suffix = uuid.uuid4().hex[:8]
    settings = services.settings.model_copy(deep=True)
    settings.data_dir = tmp_path / "data"
    settings.clickhouse.database = f"trainer_{suffix}"
    settings.kafka.training_examples_topic = f"training-examples-{suffix}"
    settings.kafka.model_updates_topic = f"model-updates-{suffix}"
    settings.kafka.partitions = 2
    workers = settings.workers
    workers.trainer_group = f"trainer-{suffix}"
    workers.device = "cpu"
    workers.trainer_batch_size = 16
    workers.trainer_learning_rate = 1e-3
    workers.trainer_holdout_fraction = 0.3
    workers.trainer_min_holdout = 10
    workers.trainer_publish_every_examples = 64
    workers.trainer_publish_every_s = 60
    workers.trainer_regression_tolerance = 0.02
    workers.trainer_max_history = HISTORY
    workers.trainer_poll_timeout_ms = 200
    migrate(settings)
    ensure_topics(settings)
    registry = ModelRegistry.from_settings(settings)
    first = registry.add("seralm", offline_folder, VersionMetadata(metrics={"offline": True}))
    return settings, first


def produce(settings, messages: int, items: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for number in range(messages):
        producer.send(
            settings.kafka.training_examples_topic,
            examples_message(rng, items),
            partition=number % 2,
        )
    producer.flush()
    producer.close()


def test_trainer_publishes_a_checked_version_with_its_metrics_and_offsets(trainer_settings):
    from models.sequential import SequentialRecommender
    from streamrec.registry import ModelRegistry
    from workers.trainer import OnlineTrainer

    settings, first = trainer_settings
    # Garbage bytes first on each partition: skipped with a warning, the partition moves on.
    undecodable = {"use": "undecodable"}
    skipped_before = REGISTRY.get_sample_value("streamrec_trainer_examples_total", undecodable)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for partition in (0, 1):
        topic = settings.kafka.training_examples_topic
        producer.send(topic, b"\xffnot protobuf", partition=partition)
    producer.flush()
    producer.close()
    produce(settings, 10, CATALOG + NEW_ITEMS, seed=1)
    trainer = OnlineTrainer(settings)
    try:
        [decision] = trainer.run(max_cycles=1)
    finally:
        trainer.close()
    assert decision.published, decision.metrics
    latest = ModelRegistry.from_settings(settings).latest("seralm")
    assert latest.version == decision.version != first.version
    assert latest.metadata["parent"] == first.version
    metrics = latest.metadata["metrics"]
    assert metrics["heldout_examples"] >= settings.workers.trainer_min_holdout
    assert metrics["heldout_ndcg@10"] >= metrics["parent_heldout_ndcg@10"] - 0.02
    assert metrics["examples_trained"] > 0 and metrics["examples_per_s"] > 0
    offsets = latest.metadata["kafka_offsets"][settings.kafka.training_examples_topic]
    assert {int(p): o for p, o in offsets.items()} == trainer.absorbed
    assert 0 < sum(offsets.values()) <= 12
    skipped = REGISTRY.get_sample_value("streamrec_trainer_examples_total", undecodable)
    assert skipped >= (skipped_before or 0) + 1  # a partition's garbage was read and passed
    item_ids = SequentialRecommender.from_pretrained(latest.path).item_ids
    assert set(NEW_ITEMS) <= set(item_ids.tolist())  # the tables grew for the new items
    [run] = list_runs(settings, kind="trainer")
    assert run.status == SUCCEEDED and run.items_ok == metrics["examples_trained"]


def test_an_update_that_regresses_is_not_published(trainer_settings):
    from streamrec.registry import ModelRegistry
    from workers.trainer import OnlineTrainer

    settings, first = trainer_settings
    settings.workers.trainer_learning_rate = 3.0  # wrecks the embeddings
    produce(settings, 8, CATALOG, seed=2)
    rejected = {"outcome": "rejected"}
    rejected_before = REGISTRY.get_sample_value("streamrec_trainer_versions_total", rejected)
    trainer = OnlineTrainer(settings)
    try:
        [decision] = trainer.run(max_cycles=1)
    finally:
        trainer.close()
    assert not decision.published
    rejected_after = REGISTRY.get_sample_value("streamrec_trainer_versions_total", rejected)
    assert rejected_after == (rejected_before or 0) + 1
    assert decision.metrics["heldout_ndcg@10"] < decision.metrics["parent_heldout_ndcg@10"] - 0.02
    assert ModelRegistry.from_settings(settings).latest("seralm").version == first.version
    [run] = list_runs(settings, kind="trainer")
    assert run.status == FAILED and "candidate rejected" in run.error


def test_checks_run_on_the_example_schedule_not_per_step(trainer_settings):
    from workers.trainer import OnlineTrainer

    settings, _ = trainer_settings
    workers = settings.workers
    workers.trainer_publish_every_examples = 96  # six micro-batches of 16
    workers.trainer_max_poll_messages = 1  # a poll: 20 examples, about 14 trained
    produce(settings, 16, CATALOG, seed=7)
    trainer = OnlineTrainer(settings)
    deadline = time.monotonic() + 120  # fail, not hang
    try:
        decisions = trainer.run(max_cycles=2, stop=lambda: time.monotonic() > deadline)
    finally:
        trainer.close()
    assert len(decisions) == 2 and all(decisions), decisions
    for decision in decisions:
        trained = decision.metrics["examples_trained"]
        # Checked once the count was reached, within a poll of it; several steps before.
        assert 96 <= trained < 96 + EXAMPLES_PER_MESSAGE
        assert decision.metrics["steps"] >= 96 // workers.trainer_batch_size
        # Each user's walk packed: fewer sequences than examples (replay adds its own).
        assert decision.metrics["sequences"] < 2 * trained
    assert len(list_runs(settings, kind="trainer")) == 2


def test_a_check_is_due_after_the_seconds_even_below_the_example_count(trainer_settings):
    from workers.trainer import OnlineTrainer

    settings, _ = trainer_settings
    settings.workers.trainer_publish_every_examples = 10**9
    settings.workers.trainer_publish_every_s = 1.0
    produce(settings, 4, CATALOG, seed=8)
    trainer = OnlineTrainer(settings)
    deadline = time.monotonic() + 120
    try:
        [decision] = trainer.run(max_cycles=1, stop=lambda: time.monotonic() > deadline)
    finally:
        trainer.close()
    assert decision is not None
    assert 0 < decision.metrics["examples_trained"] <= 4 * EXAMPLES_PER_MESSAGE


def test_the_lag_behind_the_topic_is_on_the_metrics(trainer_settings):
    from workers.trainer import CycleStats, OnlineTrainer

    settings, _ = trainer_settings
    produce(settings, 6, CATALOG, seed=9)
    trainer = OnlineTrainer(settings)
    trainer.load_latest(wait=False)
    trainer.connect()
    stats, absorbed = CycleStats(), 0
    deadline = time.monotonic() + 60
    try:
        while absorbed < 2 and time.monotonic() < deadline:
            records = trainer.consumer.poll(timeout_ms=1000, max_records=1)
            messages = [m for batch in records.values() for m in batch]
            trainer.absorb_batch(messages, stats)
            absorbed += len(messages)
        assert absorbed == 2
        trainer.update_figures()
        lag = REGISTRY.get_sample_value("streamrec_trainer_lag_examples")
        assert lag == (6 - 2) * EXAMPLES_PER_MESSAGE
        assert REGISTRY.get_sample_value("streamrec_trainer_lag_seconds") > 0
        while absorbed < 6 and time.monotonic() < deadline:
            records = trainer.consumer.poll(timeout_ms=1000)
            messages = [m for batch in records.values() for m in batch]
            trainer.absorb_batch(messages, stats)
            absorbed += len(messages)
        trainer.update_figures()
        assert REGISTRY.get_sample_value("streamrec_trainer_lag_examples") == 0
        assert REGISTRY.get_sample_value("streamrec_trainer_lag_seconds") == 0
    finally:
        trainer.close()


def test_a_restarted_trainer_resumes_from_the_offsets_of_its_last_version(trainer_settings):
    from streamrec.registry import ModelRegistry
    from workers.trainer import CycleStats, OnlineTrainer

    settings, _ = trainer_settings
    produce(settings, 6, CATALOG, seed=3)
    first_run = OnlineTrainer(settings)
    [decision] = first_run.run(max_cycles=1)
    assert decision.published
    published = ModelRegistry.from_settings(settings).latest("seralm")
    saved = published.metadata["kafka_offsets"][settings.kafka.training_examples_topic]
    published_at = sum(saved.values())  # messages absorbed when the version was published
    assert 0 < published_at <= 6
    # Consumed after the publish, never published: a restart must train on these again.
    produce(settings, 4, CATALOG, seed=4)
    first_run.config.trainer_publish_every_examples = 10**9
    deadline = time.monotonic() + 120  # fail, not hang, if the broker never delivers them
    first_run.run(
        max_cycles=1,
        stop=lambda: sum(first_run.absorbed.values()) >= 10 or time.monotonic() > deadline,
    )
    first_run.close()
    assert sum(first_run.absorbed.values()) == 10, first_run.absorbed

    restarted = OnlineTrainer(settings)
    restarted.load_latest(wait=False)
    assert restarted.version.version == published.version
    restarted.connect()
    stats = CycleStats()
    consumed = 0
    deadline = time.monotonic() + 30
    while consumed < 10 - published_at and time.monotonic() < deadline:
        for messages in restarted.consumer.poll(timeout_ms=1000).values():
            for message in messages:
                restarted.absorb(message, stats)
                consumed += 1
    # Exactly the messages after the saved offsets, including those the first trainer
    # trained on after its publish...
    assert consumed == 10 - published_at
    assert not restarted.consumer.poll(timeout_ms=1000)  # ...and nothing else
    examples = stats.held_out + len(restarted.pending) + stats.skipped
    assert examples == consumed * EXAMPLES_PER_MESSAGE
    restarted.close()
    client = connect(settings)
    assert client.execute("SELECT count() FROM job_runs FINAL WHERE kind = 'trainer'")[0][0] == 2
    client.disconnect()


def test_a_version_published_meanwhile_by_another_job_is_continued_not_overwritten(
    trainer_settings, offline_folder
):
    from streamrec.registry import ModelRegistry, VersionMetadata
    from workers.trainer import OnlineTrainer

    settings, first = trainer_settings
    produce(settings, 10, CATALOG + NEW_ITEMS, seed=5)
    trainer = OnlineTrainer(settings)
    trainer.load_latest(wait=False)
    registry = ModelRegistry.from_settings(settings)
    other = registry.add(
        "seralm", offline_folder, VersionMetadata(extra={"source": "knowledge-job"})
    )
    try:
        [decision] = trainer.run(max_cycles=1)
    finally:
        trainer.close()
    assert decision.rebased_on == other.version and not decision.published
    assert registry.latest("seralm").version == other.version
    assert trainer.version.version == other.version
    # The items only the trainer had seen are grown on the new version; buffers re-indexed.
    assert set(NEW_ITEMS) <= set(trainer.index_of)
    assert all(0 < e.target < len(trainer.item_ids) for e in [*trainer.replay, *trainer.holdout])
    [run] = list_runs(settings, kind="trainer")
    assert run.status == SUCCEEDED


def test_worker_trainer_command_runs_a_cycle_and_says_what_it_published(trainer_settings):
    settings, first = trainer_settings
    produce(settings, 10, CATALOG, seed=6)
    workers = settings.workers
    environment = {
        "STREAMREC_DATA_DIR": str(settings.data_dir),
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMREC_KAFKA__TRAINING_EXAMPLES_TOPIC": settings.kafka.training_examples_topic,
        "STREAMREC_KAFKA__MODEL_UPDATES_TOPIC": settings.kafka.model_updates_topic,
        "STREAMREC_CLICKHOUSE__HOST": settings.clickhouse.host,
        "STREAMREC_CLICKHOUSE__PORT": str(settings.clickhouse.port),
        "STREAMREC_CLICKHOUSE__DATABASE": settings.clickhouse.database,
        "STREAMREC_OPS__WORKER_METRICS_PORT": "0",
        **{
            f"STREAMREC_WORKERS__{name.upper()}": str(getattr(workers, name))
            for name in (
                "trainer_group", "device", "trainer_batch_size", "trainer_holdout_fraction",
                "trainer_min_holdout", "trainer_publish_every_examples", "trainer_max_history",
            )
        },
    }  # fmt: skip
    result = run_streamrec(
        "worker", "trainer", "--cycles", "1", environment=environment, timeout_s=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cycle: published v000002" in result.stderr
    assert '"heldout_ndcg@10"' in result.stderr


def test_new_items_get_their_llm_channel_of_the_models_versions_and_their_catalog_facts(
    trainer_settings, tmp_path
):
    """Only the newest row of the model's LLM and prompt versions fills a new item's LLM
    channel (not a newer row of another LLM, of the catalog's facts or of the single-vector
    layout); the facts channel is the catalog's facts encoded, LLM text or not."""
    from datetime import UTC, datetime

    from models.knowledge.prompts import ItemInfo, template_for
    from models.sequential import SequentialRecommender, build_recommender
    from streamrec.registry import ModelRegistry, VersionMetadata
    from workers.trainer import OnlineTrainer

    settings, _ = trainer_settings
    settings.workers.trainer_regression_tolerance = 1.0  # the gate is not under test here
    llm_dim, facts_dim = 8, 384  # the LLM rows' width; the real text encoder's
    torch.manual_seed(0)
    model = build_recommender(
        "sasrec",
        len(CATALOG) + 1,
        TINY,
        knowledge=torch.randn(len(CATALOG) + 1, llm_dim),
        facts=torch.randn(len(CATALOG) + 1, facts_dim),
    )
    model.save_pretrained(tmp_path / "fused", np.array([0, *CATALOG], dtype=np.int64))
    channels = {
        "facts": {"source": "catalog", "encoder": "all-minilm-l6-v2"},
        "llm": {"llm_version": "tiny@1", "prompt_version": "movies@t", "encoder": "minilm"},
    }
    registry = ModelRegistry.from_settings(settings)
    registry.add(
        "seralm",
        tmp_path / "fused",
        VersionMetadata(llm_version="tiny@1", extra={"knowledge_channels": channels}),
    )
    heat, toy = NEW_ITEMS  # heat has LLM text of the model's versions, toy none yet
    wanted = [0.5] * llm_dim
    others = [  # (llm_version, prompt_version, vector, created_ms): never heat's LLM row
        ("tiny@1", "movies@t+llm-channel", [0.1] * llm_dim, 1),  # older than `wanted`
        ("other@2", "movies@t+llm-channel", [0.2] * llm_dim, 3),
        ("catalog-facts", "movies@t", [0.3] * llm_dim, 4),
        ("tiny@1", "movies@t", [0.4] * llm_dim, 5),  # the single-vector layout
    ]
    stamp = datetime.now(UTC).replace(tzinfo=None)
    rows = [(heat, "tiny@1", "movies@t+llm-channel", "", wanted, stamp, 2)]
    rows += [(heat, llm, prompt, "", vector, stamp, ms) for llm, prompt, vector, ms in others]
    rows.append((toy, "other@2", "movies@t+llm-channel", "", [0.6] * llm_dim, stamp, 6))
    client = connect(settings)
    client.execute(
        "INSERT INTO item_knowledge (item_id, llm_version, prompt_version, text, vector, "
        "created_at, created_ms) VALUES",
        rows,
    )
    catalog = [(heat, "Heat", 1995, ["Crime"]), (toy, "Toy Story", 1995, ["Animation"])]
    client.execute(
        "INSERT INTO items (item_id, title, year, categories, description, attribute_keys, "
        "attribute_values, deleted, updated_ms) VALUES",
        [(item, title, year, genres, "", [], [], 0, 1) for item, title, year, genres in catalog],
    )
    client.disconnect()
    produce(settings, 10, CATALOG + NEW_ITEMS, seed=11)
    trainer = OnlineTrainer(settings)
    try:
        [decision] = trainer.run(max_cycles=1)
    finally:
        trainer.close()
    assert decision.published, decision
    latest = registry.latest("seralm")
    loaded = SequentialRecommender.from_pretrained(latest.path)
    row = {int(item): index for index, item in enumerate(loaded.item_ids)}
    fusion = loaded.model.fusion
    np.testing.assert_allclose(fusion.knowledge[row[heat]].numpy(), wanted)
    assert not fusion.knowledge[row[toy]].any()
    template = template_for(settings.knowledge.job_domain)
    facts = [
        template.facts(ItemInfo(item, title, year, tuple(g))) for item, title, year, g in catalog
    ]
    assert facts[0] == "Heat (1995). Genres: Crime."
    expected = trainer.new_items.encoder.encode(facts)
    np.testing.assert_allclose(fusion.facts[row[heat]].numpy(), expected[0], atol=1e-5)
    np.testing.assert_allclose(fusion.facts[row[toy]].numpy(), expected[1], atol=1e-5)
    assert latest.metadata["knowledge_channels"] == channels  # carried to the next version
