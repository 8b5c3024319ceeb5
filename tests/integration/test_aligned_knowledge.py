"""An aligned LLM's knowledge under the one name both sides give it: the `seralm` version
alignment publishes and the knowledge job's `item_knowledge` rows of the aligned LLM
(`workers.knowledge_pipeline.aligned_llm_version`), so the trainer and the job working on
the aligned version find those rows, and the job's run reaches the served items.

Real parts: the tiny random Llama over the real SmolLM2 tokenizer with a LoRA adapter from
alignment's own `policy_for`, published by alignment's `publish_outputs`; the real text
encoder; ClickHouse, Kafka and the registry.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from streamrec.db import connect, migrate
from streamrec.registry import ModelRegistry
from streamrec.services.children import environment_set, isolated_environment
from streamrec.settings import Settings
from streams.topics import ensure_topics
from tests.unit.knowledge_helpers import real_tokenizer, tiny_llm

ALIGNED_ITEMS = [11, 12, 13]  # in the aligned recommender
NEW_ITEM = 21  # in the catalog only
ENCODER_DIM = 384
TINY_SASREC = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1}

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.fixture(scope="module")
def aligned(services, tmp_path_factory):
    """Settings of an isolated world, and alignment's outputs published into its registry."""
    from transformers import AutoModelForCausalLM

    from models.knowledge.prompts import template_for
    from models.sequential import build_recommender
    from workers.alignment.job import policy_for
    from workers.alignment.publish import publish_outputs
    from workers.knowledge_pipeline import load_knowledge_llm

    folder = tmp_path_factory.mktemp("aligned")
    tokenizer = real_tokenizer()
    tiny_llm(tokenizer).save_pretrained(folder / "tiny-llm")
    tokenizer.save_pretrained(folder / "tiny-llm")
    environment = {
        **isolated_environment(services.launcher),
        "STREAMREC_REGISTRY__ROOT": str(folder / "registry"),
        "STREAMREC_KNOWLEDGE__LLM_PATH": str(folder / "tiny-llm"),
        "STREAMREC_KNOWLEDGE__CACHE_PATH": str(folder / "cache.sqlite"),
        "STREAMREC_KNOWLEDGE__BATCH_SIZE": "2",
        "STREAMREC_KNOWLEDGE__MAX_NEW_TOKENS": "12",
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
            (item, f"Film {item}", 1990, ["Drama"], "", [], [], 0, int(time.time() * 1000))
            for item in [*ALIGNED_ITEMS, NEW_ITEM]
        ],
    )
    client.disconnect()
    # What alignment starts from: the knowledge folder's summary (`knowledge generate` with
    # the not-aligned LLM) and a recommender with both channels.
    base = load_knowledge_llm(settings).version
    prompt = template_for(settings.knowledge.job_domain).version
    summary = {
        "llm_version": base,
        "provenance": {
            "facts": {"source": "catalog", "encoder": "all-minilm-l6-v2"},
            "llm": {"llm_version": base, "prompt_version": prompt, "encoder": "all-minilm-l6-v2"},
        },
    }
    torch.manual_seed(0)
    knowledge, facts = (
        torch.nn.functional.normalize(torch.randn(len(ALIGNED_ITEMS) + 1, ENCODER_DIM), dim=1)
        for _ in range(2)
    )
    knowledge[0] = facts[0] = 0
    recommender = build_recommender(
        "sasrec", len(ALIGNED_ITEMS) + 1, dict(TINY_SASREC), knowledge, facts=facts
    )
    policy = policy_for(
        AutoModelForCausalLM.from_pretrained(folder / "tiny-llm"), settings, torch.device("cpu")
    )
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:  # B starts at zero; an aligned adapter has moved it
            torch.nn.init.normal_(parameter, std=0.5)
    prepared = SimpleNamespace(
        knowledge_summary=summary,
        parts=SimpleNamespace(policy=policy, recommender=recommender),
        data=SimpleNamespace(item_ids=np.asarray([0, *ALIGNED_ITEMS], dtype=np.int64)),
    )
    adapter, seralm = publish_outputs(settings, prepared, {"ndcg@10": 0.0}, {"mode": "sync"})
    return SimpleNamespace(
        settings=settings, base=base, prompt=prompt, adapter=adapter, seralm=seralm, facts=facts
    )


def _rows(settings: Settings, llm_version: str) -> dict[int, list[float]]:
    client = connect(settings)
    try:
        rows = client.execute(
            "SELECT item_id, vector FROM item_knowledge WHERE llm_version = %(llm)s",
            {"llm": llm_version},
        )
    finally:
        client.disconnect()
    return dict(rows)


def test_the_aligned_versions_rows_are_found_by_the_trainer_and_the_job(aligned):
    from models.sequential import SequentialRecommender
    from workers.knowledge_job import KnowledgeJob, rows_version
    from workers.knowledge_pipeline import load_knowledge_llm
    from workers.trainer_knowledge import NewItemKnowledge, llm_rows_version

    settings, seralm, adapter = aligned.settings, aligned.seralm, aligned.adapter
    name = seralm.metadata["llm_version"]  # what alignment calls the aligned LLM
    assert seralm.metadata["knowledge_channels"]["llm"]["llm_version"] == name
    assert seralm.metadata["adapter_version"] == adapter.version

    # The job with the adapter as `align` hands it over (its registry folder), and as
    # `knowledge.adapter=latest` names it: the same LLM version, the aligned one.
    llm = load_knowledge_llm(settings, adapter=str(adapter.path))
    assert llm.version == name == load_knowledge_llm(settings, adapter="latest").version
    job = KnowledgeJob(settings, llm=llm, progress=False)
    outcome = job.run_once()
    assert (outcome.ok, outcome.failed) == (len(ALIGNED_ITEMS) + 1, 0)
    written = _rows(settings, name)
    assert sorted(written) == sorted([*ALIGNED_ITEMS, NEW_ITEM])

    # The trainer on the aligned version reads exactly those rows for the items it adds.
    assert llm_rows_version(seralm.metadata) == (name, rows_version(aligned.prompt))
    items = [NEW_ITEM, *ALIGNED_ITEMS]
    knowledge, _ = NewItemKnowledge(settings, "cpu", encoder=job.encoder).rows(
        items, ENCODER_DIM, None, seralm.metadata
    )
    expected = np.asarray([written[item] for item in items], dtype=np.float32)
    np.testing.assert_allclose(knowledge.numpy(), expected, atol=1e-6)

    # The job's version of the aligned model: the new item added, and the aligned LLM's
    # knowledge written into the rows of the items it had; their facts as they were.
    version = ModelRegistry.from_settings(settings).latest(settings.recommender.family)
    assert version.version == outcome.published and version.metadata["parent"] == seralm.version
    assert (version.metadata["llm_version"], version.metadata["adapter_version"]) == (
        name,
        adapter.version,
    )
    assert version.metadata["knowledge_items_added"] == 1
    assert version.metadata["knowledge_items_filled"] == len(ALIGNED_ITEMS)
    loaded = SequentialRecommender.from_pretrained(version.path)
    assert loaded.item_ids.tolist() == [0, *ALIGNED_ITEMS, NEW_ITEM]
    order = [*ALIGNED_ITEMS, NEW_ITEM]
    np.testing.assert_allclose(
        loaded.model.fusion.knowledge[1:].numpy(),
        np.asarray([written[item] for item in order], dtype=np.float32),
        atol=1e-6,
    )
    facts = loaded.model.fusion.facts
    assert torch.equal(facts[: len(ALIGNED_ITEMS) + 1], aligned.facts)


def test_an_aligned_llm_version_is_named_in_one_place(aligned):
    from workers.knowledge_pipeline import aligned_llm_version

    name = aligned_llm_version(aligned.base, aligned.adapter.version)
    assert name == f"{aligned.base}+lora:{aligned.adapter.version}"
    assert aligned.seralm.metadata["llm_version"] == name
