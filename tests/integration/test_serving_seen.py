"""Seen items: RecommenderService leaves out the user's whole stored history, not only the
model's window, from a per-user set read once and kept current as events are stored.

An untrained tiny SASRec over 400 items from a temporary registry; histories written
straight into the real ClickHouse; the server on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
import torch

from streamrec.registry import ModelRegistry
from streamrec.v1 import recommender_pb2, recommender_pb2_grpc
from tests.integration.helpers import served, server_settings, store_history
from tests.unit.recommender_helpers import TINY_SASREC

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")

ITEMS = list(range(1001, 1401))
LONG_USER = 7
LONG_HISTORY = ITEMS[:300]  # 300 stored events, six times the model's 50-item window
K = 100


@pytest.fixture(scope="module")
def seen_settings(services, tmp_path_factory):
    from models.sequential import build_recommender

    folder = tmp_path_factory.mktemp("seen")
    settings = server_settings(
        services.settings,
        folder,
        "seen",
        serving={"history_cache_ttl_s": 0.2, "max_k": K, "max_request_history": 40},
    )
    store_history(settings, LONG_USER, LONG_HISTORY, "long")
    torch.manual_seed(0)
    model = build_recommender("sasrec", len(ITEMS) + 1, dict(TINY_SASREC)).eval()
    model.save_pretrained(folder / "v1", np.asarray([0, *ITEMS], dtype=np.int64))
    ModelRegistry.from_settings(settings).add("seralm", folder / "v1")
    return settings


@contextlib.asynccontextmanager
async def _serving(settings):
    from serving.recommender import RecommenderServicer
    from serving.server import RECOMMENDER

    servicer = RecommenderServicer(settings)
    async with served(settings, {RECOMMENDER: servicer}) as (_, channel):
        yield servicer, recommender_pb2_grpc.RecommenderServiceStub(channel)


def _ids(reply) -> list[int]:
    return [item.item_id for item in reply.items]


def test_a_user_with_300_stored_events_gets_none_of_them_back(seen_settings):
    async def scenario():
        async with _serving(seen_settings) as (servicer, stub):
            reply = await stub.Recommend(
                recommender_pb2.RecommendRequest(user_id=LONG_USER, k=K), timeout=10
            )
            assert not reply.cold_start and len(reply.items) == K
            assert not set(_ids(reply)) & set(LONG_HISTORY)
            # They would rank: with include_seen, items older than the model's window come back.
            kept = await stub.Recommend(
                recommender_pb2.RecommendRequest(user_id=LONG_USER, k=K, include_seen=True),
                timeout=10,
            )
            assert set(_ids(kept)) & set(LONG_HISTORY[:-50])
            assert servicer.history.seen_reads == 1

            # A new event is left out as soon as the recent history is read again, without
            # reading the whole history again.
            clicked = _ids(reply)[0]
            # store_history stamps rows a millisecond apart from a minute ago: after 0.4 s,
            # this click is newer than all 300 stored ones.
            await asyncio.sleep(0.4)
            store_history(seen_settings, LONG_USER, [clicked], "new")
            await asyncio.sleep(0.3)  # the recent history's TTL
            after = await stub.Recommend(
                recommender_pb2.RecommendRequest(user_id=LONG_USER, k=K), timeout=10
            )
            assert clicked not in _ids(after)
            assert not set(_ids(after)) & set(LONG_HISTORY)
            assert servicer.history.seen_reads == 1

    asyncio.run(scenario())


def test_a_repeated_item_of_a_request_history_and_the_stored_history_are_left_out(
    seen_settings,
):
    given = [1350, 1351, 1350, 1352, 1350]

    async def scenario():
        async with _serving(seen_settings) as (_, stub):
            for user_id in (0, LONG_USER):
                reply = await stub.Recommend(
                    recommender_pb2.RecommendRequest(user_id=user_id, history=given, k=K // 2),
                    timeout=10,
                )
                assert len(reply.items) == K // 2
                assert not set(_ids(reply)) & set(given)
                if user_id:  # a known user's stored items too, though the request's
                    assert not set(_ids(reply)) & set(LONG_HISTORY)  # history is used
            pool = [*dict.fromkeys(given), 1353]
            for include_seen, expected in ((False, [1353]), (True, pool)):
                reply = await stub.Recommend(
                    recommender_pb2.RecommendRequest(
                        history=given, k=5, candidate_item_ids=pool, include_seen=include_seen
                    ),
                    timeout=10,
                )
                assert sorted(_ids(reply)) == expected

    asyncio.run(scenario())
