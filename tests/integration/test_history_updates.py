"""Cached histories live until the stream worker says the user's new events are stored.

A server that hears `history-updates` keeps a user's history cached (no ClickHouse read
per call), and the next call after an update naming the user reads the new history. The
update here is produced by hand, as the stream worker does once the rows are readable
(tests/integration/test_stream_worker.py checks the worker's side).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest
import torch
from kafka import KafkaProducer

from streamrec.registry import ModelRegistry
from streamrec.v1 import events_pb2, recommender_pb2, recommender_pb2_grpc
from streams.topics import ensure_topics
from tests.integration.helpers import served, server_settings, store_history
from tests.unit.recommender_helpers import TINY_SASREC

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")

ITEMS = list(range(2001, 2101))
USER = 31
K = len(ITEMS) - 10


@pytest.fixture(scope="module")
def updates_settings(services, tmp_path_factory):
    from models.sequential import build_recommender

    folder = tmp_path_factory.mktemp("updates")
    settings = server_settings(
        services.settings,
        folder,
        "updates",
        serving={"history_updates_ttl_s": 600, "max_k": K},
        kafka={"history_updates_topic": f"history-updates-{uuid.uuid4().hex[:8]}"},
    )
    ensure_topics(settings)
    torch.manual_seed(0)
    model = build_recommender("sasrec", len(ITEMS) + 1, dict(TINY_SASREC)).eval()
    model.save_pretrained(folder / "v1", np.asarray([0, *ITEMS], dtype=np.int64))
    ModelRegistry.from_settings(settings).add("seralm", folder / "v1")
    return settings


def test_a_cached_history_is_read_again_only_once_the_user_has_new_events(updates_settings):
    from serving.recommender import RecommenderServicer
    from serving.server import RECOMMENDER

    settings = updates_settings
    store_history(settings, USER, ITEMS[:3], "before")

    async def recommend(stub) -> set[int]:
        reply = await stub.Recommend(
            recommender_pb2.RecommendRequest(user_id=USER, k=K), timeout=10
        )
        return {item.item_id for item in reply.items}

    async def scenario():
        servicer = RecommenderServicer(settings)
        async with served(settings, {RECOMMENDER: servicer}) as (_, channel):
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            await asyncio.to_thread(servicer.history.updates.listening.wait, 30)
            assert servicer.history.updates.listening.is_set()
            assert not await recommend(stub) & set(ITEMS[:3])
            misses = servicer.history.misses

            store_history(settings, USER, ITEMS[3:6], "after")
            for _ in range(5):  # no update yet: answered from the cache, no read
                await recommend(stub)
            assert servicer.history.misses == misses

            producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
            update = events_pb2.HistoryUpdate(user_ids=[USER], timestamp_ms=int(time.time()))
            producer.send(settings.kafka.history_updates_topic, update.SerializeToString())
            producer.flush()
            producer.close()
            deadline = time.monotonic() + 10
            while await recommend(stub) & set(ITEMS[3:6]) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not await recommend(stub) & set(ITEMS[:6])
            assert servicer.history.misses == misses + 1

    asyncio.run(scenario())
