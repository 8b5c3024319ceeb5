"""GenRecService on loopback: a tiny GenRec from a temporary registry, histories in ClickHouse."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from serving.genrec import GenRecServicer
from serving.server import GENREC, start_server
from streamrec.registry import ModelRegistry
from streamrec.v1 import genrec_pb2, genrec_pb2_grpc
from tests.integration.helpers import server_settings, store_history
from tests.unit.genrec_helpers import N_ITEMS, N_USERS, tiny_model

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


ITEMS = np.arange(501, 500 + N_ITEMS, dtype=np.int64)  # external item ids of model indices 1..30
USERS = np.arange(71, 70 + N_USERS, dtype=np.int64)  # external user ids of user rows 1..8
STORED_USER = 72
STORED_HISTORY = [503, 504, 505, 506, 507, 508, 509, 510]
BEAM = 24


def _publish(registry: ModelRegistry, folder, seed: int):
    zero = np.zeros(1, dtype=np.int64)
    # Two-digit pieces, the tokenizer's default: each of the 30 items in one piece.
    tiny_model(seed, max_history=10, piece_digits=2).eval().save_pretrained(
        folder, np.r_[zero, ITEMS], np.r_[zero, USERS], {"seed": seed}
    )
    return registry.add("genrec", folder)


@pytest.fixture(scope="module")
def world(services, tmp_path_factory):
    folder = tmp_path_factory.mktemp("genrec-serving")
    settings = server_settings(
        services.settings,
        folder,
        "genrec",
        serving={"history_cache_ttl_s": 0.1},
        genrec={"beam_size": BEAM},
    )
    store_history(settings, STORED_USER, STORED_HISTORY, "g")
    registry = ModelRegistry.from_settings(settings)
    first = _publish(registry, folder / "v1", seed=0)
    return settings, registry, first, folder


async def _with_server(settings, check):
    server, port = await start_server(settings, {GENREC: GenRecServicer(settings)})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await check(genrec_pb2_grpc.GenRecServiceStub(channel), server)
    finally:
        await server.stop(None)


def test_generate_answers_from_request_and_stored_histories(world):
    settings, registry, first, folder = world

    async def check(stub, server):
        given = [520, 521, 522]
        reply = await stub.Generate(genrec_pb2.GenerateRequest(history=given, k=20), timeout=30)
        ids = [item.item_id for item in reply.items]
        assert reply.model_version == first.version
        assert len(ids) == 20 == len(set(ids))
        assert set(ids) <= set(ITEMS.tolist()) and not set(ids) & set(given)
        scores = [item.score for item in reply.items]
        assert scores == sorted(scores, reverse=True)

        # No history in the request: the user's stored one is read (and left out).
        reply = await stub.Generate(
            genrec_pb2.GenerateRequest(user_id=STORED_USER, k=BEAM),
            timeout=30,
        )
        ids = [item.item_id for item in reply.items]
        assert len(ids) == len(ITEMS) - len(STORED_HISTORY)  # all that is left in the catalog
        assert not set(ids) & set(STORED_HISTORY)

        seen = await stub.Generate(
            genrec_pb2.GenerateRequest(user_id=STORED_USER, k=BEAM, include_seen=True),
            timeout=30,
        )
        assert len(seen.items) == BEAM
        assert {item.item_id for item in seen.items} & set(STORED_HISTORY)

        # Concurrent requests share micro-batches and each gets its own answer.
        replies = await asyncio.gather(
            *(
                stub.Generate(genrec_pb2.GenerateRequest(history=[int(i)], k=5), timeout=30)
                for i in ITEMS[:8]
            )
        )
        for item, reply in zip(ITEMS[:8], replies, strict=True):
            assert len(reply.items) == 5 and item not in [r.item_id for r in reply.items]

        # A newer version is picked up without a restart.
        second = _publish(registry, folder / "v2", seed=1)
        deadline = time.monotonic() + 20
        version = first.version
        while version != second.version and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            reply = await stub.Generate(genrec_pb2.GenerateRequest(history=[501], k=3), timeout=30)
            version = reply.model_version
        assert version == second.version

    asyncio.run(_with_server(settings, check))


def test_the_whole_stored_history_is_left_out_not_only_the_models_window(world):
    settings = world[0].model_copy(deep=True)
    settings.serving.history_length = 5  # the window the model reads
    user, stored = 73, [int(i) for i in ITEMS[10:22]]
    store_history(settings, user, stored, "whole")

    async def check(stub, server):
        reply = await stub.Generate(genrec_pb2.GenerateRequest(user_id=user, k=BEAM), timeout=30)
        ids = [item.item_id for item in reply.items]
        assert len(ids) == len(ITEMS) - len(stored)  # all that is left in the catalog
        assert not set(ids) & set(stored)
        # With the user's id, the stored items are left out of a request history's answer too.
        reply = await stub.Generate(
            genrec_pb2.GenerateRequest(user_id=user, history=[501, 502, 501], k=BEAM), timeout=30
        )
        assert not {item.item_id for item in reply.items} & {*stored, 501, 502}

    asyncio.run(_with_server(settings, check))


BAD_REQUESTS = [
    (genrec_pb2.GenerateRequest(history=[501], k=BEAM + 1), "k must be between 1 and 24"),
    (genrec_pb2.GenerateRequest(history=[501], k=-2), "k must be between"),
    (genrec_pb2.GenerateRequest(user_id=-4, history=[501]), "user_id must not be negative"),
    (genrec_pb2.GenerateRequest(k=5), "give a user_id"),
    (genrec_pb2.GenerateRequest(history=[501, 999_999], k=5), "not in the catalog"),
    (genrec_pb2.GenerateRequest(history=list(range(501, 542)), k=5), "at most 40"),
    (genrec_pb2.GenerateRequest(user_id=123_456, k=5), "no history this model knows"),
]


def test_generate_rejects_bad_requests(world):
    settings = world[0]

    async def check(stub, server):
        for request, reason in BAD_REQUESTS:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Generate(request, timeout=30)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert reason in raised.value.details()

    asyncio.run(_with_server(settings, check))


def test_generate_says_unavailable_before_any_version(world, tmp_path):
    settings = world[0]
    empty = settings.model_copy(
        update={"registry": settings.registry.model_copy(update={"root": str(tmp_path)})}
    )

    async def check(stub, server):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Generate(genrec_pb2.GenerateRequest(history=[501], k=5), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no genrec model" in raised.value.details()

    asyncio.run(_with_server(empty, check))
