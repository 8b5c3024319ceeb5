"""bench/online.py's knowledge variant on the real ClickHouse and registry, with a tiny
SASRec on the first MovieLens-100K events: the catalog's facts (no LLM runs) are its
facts channel, for the items of the offline training and for the items the knowledge
job's `extend_items` adds after the split; it has no LLM channel."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from bench.online_models import add_new_items, catalog_knowledge, train_and_publish
from models.knowledge.prompts import template_for
from streamrec.datasets import first_interactions, load_dataset
from streamrec.db import migrate
from streams.topics import ensure_topics
from tests.unit.recommender_helpers import TINY_SASREC

FAMILY = "bench-knowledge"

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


def test_catalog_facts_fill_the_knowledge_variants_facts_channel(services, tmp_path):
    from models.sequential import SequentialRecommender
    from streamrec.registry import ModelRegistry
    from workers.knowledge_pipeline import dataset_items, domain_of, load_encoder

    settings = services.settings.model_copy(deep=True)
    settings.data_dir = tmp_path / "data"
    suffix = uuid.uuid4().hex[:8]
    settings.clickhouse.database = f"bench_knowledge_{suffix}"
    settings.kafka.model_updates_topic = f"model-updates-{suffix}"
    settings.recommender.model_configs = {"sasrec": dict(TINY_SASREC)}
    migrate(settings)
    ensure_topics(settings)
    dataset = first_interactions(load_dataset("ml-100k", settings), 300)
    folder = tmp_path / "knowledge"
    summary = catalog_knowledge(settings, dataset, folder)
    train_and_publish(settings, dataset, 150, [FAMILY], 1, 1, knowledge_folder=folder)
    registry = ModelRegistry.from_settings(settings)
    first = registry.latest(FAMILY)
    offline = SequentialRecommender.from_pretrained(first.path)
    assert offline.model.knowledge_dim is None  # no LLM ran: no LLM channel
    assert offline.model.facts_dim == summary["encoder_dim"]
    encoder = load_encoder(settings, device="cpu")
    template = template_for(domain_of(settings, dataset.name))
    catalog = {item.item_id: item for item in dataset_items(dataset)}

    def facts_of(items: list[int]) -> np.ndarray:
        return encoder.encode([template.facts(catalog[item]) for item in items])

    known = offline.item_ids[1:].tolist()
    facts = offline.model.fusion.facts
    np.testing.assert_allclose(facts[1:].numpy(), facts_of(known), atol=1e-5)
    assert first.metadata["knowledge_channels"]["facts"]["encoder"] == encoder.name

    added = add_new_items(settings, FAMILY, summary["prompt_version"])
    assert added == registry.latest(FAMILY).version
    grown = SequentialRecommender.from_pretrained(registry.latest(FAMILY).path)
    new = grown.item_ids[len(offline.item_ids) :].tolist()
    assert new and sorted(new) == sorted(set(catalog) - set(known))  # seen after the split
    assert grown.model.knowledge_dim is None
    new_facts = grown.model.fusion.facts[len(offline.item_ids) :].numpy()
    np.testing.assert_allclose(new_facts, facts_of(new), atol=1e-5)
