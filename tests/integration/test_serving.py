"""RecommenderService on loopback with the real Kafka, ClickHouse and a tiny SASRec.

The model is trained here for a few steps on synthetic "next item = item + 1"
sequences, the same ones a stream worker stores in ClickHouse, and published
to a registry in a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter

import grpc
import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY

from streamrec.db import connect, count_rows, migrate
from streamrec.registry import ModelRegistry, VersionMetadata, announce
from streamrec.services.children import (
    StreamWorker,
    environment_set,
    isolated_environment,
    wait_for,
)
from streamrec.settings import Settings
from streamrec.v1 import recommender_pb2, recommender_pb2_grpc
from streams.producer import InteractionProducer, now_ms
from streams.topics import ensure_topics
from tests.integration.helpers import served

ITEMS = list(range(101, 131))  # external item ids; model indices 1..30
NEW_ITEM = 131  # has knowledge, no interaction: added to the model by extend_items
USERS = range(1, 21)
SEQUENCE_LENGTH = 8
TINY_SASREC = {
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 1,
    "max_seq_length": 20,
}


def _next(item: int) -> int:
    return ITEMS[(ITEMS.index(item) + 1) % len(ITEMS)]


def _synthetic_sequences(seed: int = 0) -> dict[int, list[int]]:
    rng = random.Random(seed)
    sequences = {}
    for user in USERS:
        item = rng.choice(ITEMS)
        sequence = []
        for _ in range(SEQUENCE_LENGTH):
            sequence.append(item)
            item = _next(item)
        sequences[user] = sequence
    return sequences


def _train_tiny_sasrec(sequences: dict[int, list[int]], steps: int = 60):
    from models.sequential import build_recommender

    torch.manual_seed(0)
    index_of = {item: n + 1 for n, item in enumerate(ITEMS)}
    model = build_recommender("sasrec", len(ITEMS) + 1, dict(TINY_SASREC))
    prefixes, lengths, targets = [], [], []
    for sequence in sequences.values():
        for end in range(1, len(sequence)):
            prefix = [index_of[i] for i in sequence[:end]]
            prefixes.append(prefix + [0] * (SEQUENCE_LENGTH - len(prefix)))
            lengths.append(len(prefix))
            targets.append(index_of[sequence[end]])
    item_seq, item_seq_len = torch.tensor(prefixes), torch.tensor(lengths)
    target = torch.tensor(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(item_seq, item_seq_len, target).backward()
        optimizer.step()
    return model.eval()


def _send_clicks(producer, user: int, items: list[int], prefix: str, first_ms: int, spacing_ms):
    """The user's clicks on `items` in order, `spacing_ms` apart from `first_ms`."""
    for n, item in enumerate(items):
        producer.send(
            user_id=user,
            item_id=item,
            event_type="click",
            event_id=f"{prefix}-{user}-{n}",
            timestamp_ms=first_ms + n * spacing_ms,
        )


def _publish(registry: ModelRegistry, model, item_ids, folder, note: str):
    model.save_pretrained(folder, np.asarray(item_ids, dtype=np.int64))
    return registry.add("seralm", folder, VersionMetadata(extra={"note": note}))


@pytest.fixture(scope="module")
def world(services, tmp_path_factory):
    """Isolated topics and database, the synthetic histories stored by a stream worker,
    and a first model version in a temporary registry."""
    folder = tmp_path_factory.mktemp("serving")
    overrides = {
        **isolated_environment(services.launcher),
        "STREAMREC_STREAMS__SINK_FLUSH_INTERVAL_S": "0.2",
    }
    with environment_set(overrides):
        settings = Settings()
    settings = settings.model_copy(
        update={
            "registry": settings.registry.model_copy(update={"root": str(folder / "registry")}),
            "serving": settings.serving.model_copy(
                update={
                    "port": 0,
                    "history_cache_ttl_s": 0.2,
                    "reload_poll_s": 120.0,  # hot reload must come from the announcement
                    "max_request_history": 20,
                    "max_request_ids": 40,
                    "max_k": 50,
                }
            ),
        }
    )
    migrate(settings)
    ensure_topics(settings)
    worker = StreamWorker(settings, overrides, folder / "worker.log")
    worker.start()
    try:
        sequences = _synthetic_sequences()
        start = now_ms() - 60_000
        with InteractionProducer.from_settings(settings) as producer:
            for user, sequence in sequences.items():
                _send_clicks(producer, user, sequence, "seed", start, spacing_ms=1000)
        total = sum(len(s) for s in sequences.values())
        wait_for(lambda: count_rows(settings, "interactions") >= total, 90, "seed rows", worker)
        model = _train_tiny_sasrec(sequences)
        registry = ModelRegistry.from_settings(settings)
        first = _publish(registry, model, [0, *ITEMS], folder / "v1", "first")
        yield {
            "settings": settings,
            "worker": worker,
            "sequences": sequences,
            "model": model,
            "registry": registry,
            "first": first,
            "folder": folder,
        }
    finally:
        worker.stop()


@contextlib.asynccontextmanager
async def _serving(settings: Settings):
    """A RecommenderService on loopback: the server, its servicer and a stub on a channel to
    it; the channel is closed and the server stopped after."""
    from serving.recommender import RecommenderServicer
    from serving.server import RECOMMENDER

    servicer = RecommenderServicer(settings)
    async with served(settings, {RECOMMENDER: servicer}) as (server, channel):
        yield server, servicer, recommender_pb2_grpc.RecommenderServiceStub(channel)


def _ids(reply) -> list[int]:
    return [item.item_id for item in reply.items]


def test_recommendations_change_after_replayed_events_and_exclude_them(world):
    settings, user = world["settings"], 3
    history = world["sequences"][user]

    async def scenario():
        async with _serving(settings) as (_, _, stub):
            before = await stub.Recommend(
                recommender_pb2.RecommendRequest(user_id=user, k=10), timeout=10
            )
            assert before.model_version == world["first"].version
            assert not before.cold_start and len(before.items) == 10
            assert not set(_ids(before)) & set(history)  # seen items are excluded
            scores = [item.score for item in before.items]
            assert scores == sorted(scores, reverse=True)
            # The same history given explicitly ranks the same way.
            explicit = await stub.Recommend(
                recommender_pb2.RecommendRequest(history=history, k=10), timeout=10
            )
            assert _ids(explicit) == _ids(before)

            # The user now clicks two of the recommended items; the stream stores them.
            clicked = _ids(before)[:2]
            with InteractionProducer.from_settings(settings) as producer:
                _send_clicks(producer, user, clicked, "new", now_ms(), spacing_ms=1)

            async def changed():
                while True:
                    reply = await stub.Recommend(
                        recommender_pb2.RecommendRequest(user_id=user, k=10), timeout=10
                    )
                    if not set(clicked) & set(_ids(reply)):
                        return reply
                    await asyncio.sleep(0.2)

            after = await asyncio.wait_for(changed(), 60)
            assert _ids(after) != _ids(before)
            assert not set(_ids(after)) & set(history + clicked)
            # include_seen keeps them eligible.
            seen_too = await stub.Recommend(
                recommender_pb2.RecommendRequest(user_id=user, k=len(ITEMS), include_seen=True),
                timeout=10,
            )
            assert set(clicked) <= set(_ids(seen_too))

    asyncio.run(scenario())


def test_candidates_exclusions_and_cold_start_from_popular_items(world):
    settings = world["settings"]
    client = connect(settings)  # every stored click (other tests may have added some)
    popularity = dict(client.execute("SELECT item_id, count() FROM interactions GROUP BY item_id"))
    client.disconnect()
    ranked = sorted(popularity, key=lambda item: (-popularity[item], item))
    assert sum(popularity.values()) >= len(USERS) * SEQUENCE_LENGTH

    async def scenario():
        async with _serving(settings) as (_, _, stub):
            history = [101, 102, 103]
            candidates = [120, 110, 104, 125]
            reply = await stub.Recommend(
                recommender_pb2.RecommendRequest(
                    history=history, k=3, candidate_item_ids=candidates, exclude_item_ids=[110]
                ),
                timeout=10,
            )
            assert len(reply.items) == 3
            assert set(_ids(reply)) <= {120, 104, 125}
            # Scores are the model's dot products, the same as over the whole catalog.
            full = await stub.Recommend(
                recommender_pb2.RecommendRequest(history=history, k=len(ITEMS) - 3), timeout=10
            )
            full_scores = {item.item_id: item.score for item in full.items}
            for item in reply.items:
                assert item.score == pytest.approx(full_scores[item.item_id], rel=1e-4, abs=1e-5)
            # An unknown user: popular recent items from ClickHouse, minus the excluded.
            cold = await stub.Recommend(
                recommender_pb2.RecommendRequest(
                    user_id=999_999, k=5, exclude_item_ids=[ranked[0]]
                ),
                timeout=10,
            )
            assert cold.cold_start
            assert _ids(cold) == ranked[1:6]

    asyncio.run(scenario())


def test_every_bad_request_gets_invalid_argument_with_the_reason(world):
    settings = world["settings"]
    bad = [
        (recommender_pb2.RecommendRequest(user_id=1, k=0), "k must be between 1 and 50"),
        (recommender_pb2.RecommendRequest(user_id=1, k=51), "k must be between 1 and 50"),
        (recommender_pb2.RecommendRequest(k=5), "user_id"),
        (recommender_pb2.RecommendRequest(user_id=-4, k=5), "negative"),
        (
            recommender_pb2.RecommendRequest(user_id=1, k=5, candidate_item_ids=[101, 77777]),
            "77777",
        ),
        (recommender_pb2.RecommendRequest(history=[101] * 21, k=5), "history has 21"),
        (
            recommender_pb2.RecommendRequest(user_id=1, k=5, exclude_item_ids=list(range(41))),
            "exclude_item_ids has 41",
        ),
        (
            recommender_pb2.RecommendRequest(user_id=1, k=5, candidate_item_ids=[101] * 41),
            "candidate_item_ids has 41",
        ),
    ]

    async def scenario():
        async with _serving(settings) as (_, _, stub):
            for request, reason in bad:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.Recommend(request, timeout=10)
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
                assert reason in raised.value.details()

    asyncio.run(scenario())


def _batch_observations() -> float:
    return REGISTRY.get_sample_value("streamrec_serving_batch_size_count", {"stage": "model"}) or 0


def test_hot_reload_during_a_stream_of_requests_fails_none(world):
    settings, registry = world["settings"], world["registry"]
    model = world["model"]

    async def scenario():
        async with _serving(settings) as (_, servicer, stub):
            versions, failures, done = Counter(), [], asyncio.Event()

            async def client(user: int):
                while not done.is_set():
                    try:
                        reply = await stub.Recommend(
                            recommender_pb2.RecommendRequest(user_id=user, k=5), timeout=10
                        )
                        versions[reply.model_version] += 1
                    except grpc.aio.AioRpcError as error:
                        failures.append(error)

            try:
                # The new item is unknown to the first version.
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.Recommend(
                        recommender_pb2.RecommendRequest(
                            user_id=1, k=1, candidate_item_ids=[NEW_ITEM]
                        ),
                        timeout=10,
                    )
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert await asyncio.to_thread(servicer.holder.listening.wait, 30)
                batches_before = _batch_observations()
                clients = [asyncio.create_task(client(user)) for user in list(USERS)[:8]]
                await asyncio.sleep(1.0)
                # A new version with one new item that no one has interacted with yet (in
                # production the knowledge job adds such items with their knowledge vectors).
                import copy

                grown = copy.deepcopy(model)
                grown.extend_items(1, None)
                second = await asyncio.to_thread(
                    _publish,
                    registry,
                    grown,
                    [0, *ITEMS, NEW_ITEM],
                    world["folder"] / "v2",
                    "grown",
                )
                await asyncio.to_thread(announce, settings, second)

                async def swapped():
                    while versions[second.version] < 20:
                        await asyncio.sleep(0.05)

                await asyncio.wait_for(swapped(), 60)
                done.set()
                await asyncio.gather(*clients)
                assert failures == []
                assert versions[world["first"].version] > 0 and versions[second.version] >= 20
                # Concurrent requests shared forwards.
                requests = sum(versions.values())
                assert _batch_observations() - batches_before < requests
                with_new = await stub.Recommend(
                    recommender_pb2.RecommendRequest(user_id=1, k=1, candidate_item_ids=[NEW_ITEM]),
                    timeout=10,
                )
                assert _ids(with_new) == [NEW_ITEM]
                assert with_new.model_version == second.version
            finally:
                done.set()

    asyncio.run(scenario())


def test_with_auth_on_a_call_needs_the_token(world):
    from streamrec.client import RecommenderClient

    settings = world["settings"].model_copy(deep=True)
    settings.serving.auth_tokens = ["serving-test-token"]

    async def scenario():
        async with _serving(settings) as (server, _, stub):
            port = server.port
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Recommend(recommender_pb2.RecommendRequest(user_id=2, k=3), timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

            def with_client(token):
                with RecommenderClient(f"127.0.0.1:{port}", token=token) as client:
                    return client.recommend(user_id=2, k=3)

            with pytest.raises(grpc.RpcError) as refused:
                await asyncio.to_thread(with_client, "wrong")
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answer = await asyncio.to_thread(with_client, "serving-test-token")
            assert len(answer.items) == 3 and not answer.cold_start

    asyncio.run(scenario())
