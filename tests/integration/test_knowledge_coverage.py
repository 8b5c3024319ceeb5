"""Coverage as the knowledge job leaves it, on the real Kafka and ClickHouse: a batch that
fails is counted failed with its error (and the run's page has the log line), and the next
run covers it. The LLM is a tiny random Llama over the real SmolLM2 tokenizer, the text
encoder the real all-MiniLM-L6-v2; the encoder is made to fail on one item's document (a
fault injected at the encoder's boundary, as an out-of-memory there would)."""

from __future__ import annotations

import time

import pytest

from streamrec.coverage import knowledge_coverage
from streamrec.db import connect, migrate
from streamrec.jobs import FAILED, SUCCEEDED, get_log_tail, get_run
from streamrec.services.children import environment_set, isolated_environment
from streamrec.settings import Settings
from streams.topics import ensure_topics
from tests.unit.knowledge_helpers import real_tokenizer, tiny_llm

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")

ITEMS = {1: "Heat", 2: "Broken Arrow", 3: "Alien", 4: "Fargo"}
ERROR = "encoder ran out of memory"


class FailingOn:
    """The real encoder, raising on its `call`-th batch: with one item a batch, taken in
    item order, the second is item 2's (the LLM channel encodes the text alone, which
    need not name the item)."""

    def __init__(self, encoder, call: int):
        self.encoder, self.call, self.calls = encoder, call, 0

    def encode(self, texts, batch_size=64):
        self.calls += 1
        if self.calls == self.call:
            raise RuntimeError(ERROR)
        return self.encoder.encode(texts, batch_size)


@pytest.fixture
def knowledge_settings(services, tmp_path):
    tokenizer = real_tokenizer()
    tiny_llm(tokenizer).save_pretrained(tmp_path / "tiny-llm")
    tokenizer.save_pretrained(tmp_path / "tiny-llm")
    environment = {
        **isolated_environment(services.launcher),
        "STREAMREC_REGISTRY__ROOT": str(tmp_path / "registry"),
        "STREAMREC_KNOWLEDGE__LLM_PATH": str(tmp_path / "tiny-llm"),
        "STREAMREC_KNOWLEDGE__CACHE_PATH": str(tmp_path / "cache.sqlite"),
        "STREAMREC_KNOWLEDGE__JOB_WRITE_BATCH": "1",
        "STREAMREC_KNOWLEDGE__MAX_NEW_TOKENS": "8",
        "STREAMREC_KNOWLEDGE__JOB_POLL_TIMEOUT_MS": "500",
        "STREAMREC_KNOWLEDGE__THREADS": "1",
    }
    with environment_set(environment):
        settings = Settings()
    migrate(settings)
    ensure_topics(settings)
    client = connect(settings)
    client.execute(
        "INSERT INTO items (item_id, title, year, categories, description, attribute_keys, "
        "attribute_values, deleted, updated_ms) VALUES",
        [
            (i, title, 1995, ["Drama"], "", [], [], 0, int(time.time() * 1000))
            for i, title in ITEMS.items()
        ],
    )
    client.disconnect()
    return settings


def test_a_failed_batch_is_counted_with_its_reason_and_the_next_run_covers_it(
    knowledge_settings,
):
    from workers.knowledge_job import KnowledgeJob, rows_version
    from workers.knowledge_pipeline import load_encoder

    settings = knowledge_settings
    before = knowledge_coverage(settings)
    assert (before.catalog_items, before.covered_items, before.llm_version) == (4, 0, "")
    encoder = load_encoder(settings, device="cpu")
    job = KnowledgeJob(settings, encoder=FailingOn(encoder, call=2), progress=False)
    first = job.run_once()
    assert (first.ok, first.failed) == (3, 1)

    coverage = knowledge_coverage(settings)
    # Coverage counts the vectors this code writes: the template's LLM-channel rows.
    assert (coverage.llm_version, coverage.prompt_version) == (
        first.llm_version,
        rows_version(first.prompt_version),
    )
    assert (coverage.catalog_items, coverage.covered_items, coverage.failed_items) == (4, 3, 1)
    assert [(f.item_id, f.reason) for f in coverage.failures] == [(2, f"RuntimeError: {ERROR}")]
    assert coverage.pending_requests == 0
    run = get_run(settings, first.run_id)
    assert run.status == FAILED and ERROR in run.error
    tail = get_log_tail(settings, first.run_id)
    assert "knowledge for items [2] failed" in tail and f"run failed: {run.error}" in tail

    second = KnowledgeJob(settings, llm=job.llm, encoder=encoder, progress=False).run_once()
    assert (second.ok, second.failed) == (1, 0)
    assert get_run(settings, second.run_id).status == SUCCEEDED
    after = knowledge_coverage(settings)
    assert (after.covered_items, after.failed_items, after.ratio) == (4, 0, 1.0)
    assert after.oldest_missing_age_s == 0.0
