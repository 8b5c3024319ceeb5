"""RecSysLLMService on loopback: a tiny RecSysLLM from a temporary registry,
histories from the request or from ClickHouse."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from models.recsysllm.artifact import RecSysLLMArtifact
from models.recsysllm.configuration_recsysllm import RecSysLLMConfig
from models.recsysllm.modeling_recsysllm import RecSysLLM
from models.recsysllm.textualise import UserProfile
from serving.recsysllm import RecSysLLMServicer
from serving.server import RECSYSLLM, start_server
from streamrec.registry import ModelRegistry
from streamrec.v1 import recsysllm_pb2, recsysllm_pb2_grpc
from tests.integration.helpers import server_settings, store_history
from tests.unit.recsysllm_helpers import TITLES, tiny_llm

ITEMS = {601 + index: title for index, title in enumerate(TITLES)}
STORED_USER = 81
STORED_HISTORY = [601, 602]


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.fixture(scope="module")
def world(services, tmp_path_factory):
    folder = tmp_path_factory.mktemp("recsysllm-serving")
    settings = server_settings(
        services.settings,
        folder,
        "recsysllm",
        recsysllm={"beams": 4, "explanation_tokens": 6, "max_candidates": 5},
    )
    store_history(settings, STORED_USER, STORED_HISTORY, "r")
    tok, llm, markers = tiny_llm()
    model = RecSysLLM(llm, RecSysLLMConfig(lora_rank=0), markers).eval()
    artifact = RecSysLLMArtifact(
        model, tok, ITEMS, {STORED_USER: UserProfile(30, "F", "writer")}, ""
    )
    version = ModelRegistry.from_settings(settings).add(
        "recsysllm", artifact.save_pretrained(folder / "v1")
    )
    return settings, version


async def _with_server(settings, check):
    server, port = await start_server(settings, {RECSYSLLM: RecSysLLMServicer(settings)})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await check(recsysllm_pb2_grpc.RecSysLLMServiceStub(channel))
    finally:
        await server.stop(None)


def test_the_four_methods_answer_with_catalog_items(world):
    settings, version = world

    async def check(stub):
        reply = await stub.NextItems(recsysllm_pb2.NextItemsRequest(history=[603], k=4), timeout=60)
        ids = [item.item_id for item in reply.items]
        assert reply.model_version == version.version
        assert len(ids) == 4 == len(set(ids)) and set(ids) <= set(ITEMS) and 603 not in ids
        assert list(reply.titles) == [ITEMS[i] for i in ids]

        # The stored history is read when the request has none, and left out.
        reply = await stub.NextItems(
            recsysllm_pb2.NextItemsRequest(user_id=STORED_USER, k=3), timeout=60
        )
        assert not {item.item_id for item in reply.items} & set(STORED_HISTORY)

        candidates = [604, 605, 606]
        ranked = await stub.RankCandidates(
            recsysllm_pb2.RankCandidatesRequest(history=[601], candidate_item_ids=candidates),
            timeout=60,
        )
        assert sorted(item.item_id for item in ranked.items) == candidates
        scores = [item.score for item in ranked.items]
        assert scores == sorted(scores, reverse=True)

        rating = await stub.PredictRating(
            recsysllm_pb2.PredictRatingRequest(history=[601], item_id=604), timeout=60
        )
        assert 1.0 <= rating.rating <= 5.0

        explained = await stub.Explain(
            recsysllm_pb2.ExplainRequest(history=[601], item_id=604), timeout=60
        )
        assert explained.model_version == version.version
        assert isinstance(explained.explanation, str)

    asyncio.run(_with_server(settings, check))


def test_next_items_leaves_out_the_whole_stored_history(world):
    settings = world[0].model_copy(deep=True)
    settings.serving.history_length = 2  # the window the prompt reads
    user, stored = 82, [601, 602, 603, 604, 605]
    store_history(settings, user, stored, "whole")

    async def check(stub):
        reply = await stub.NextItems(recsysllm_pb2.NextItemsRequest(user_id=user, k=3), timeout=60)
        assert reply.items and not {item.item_id for item in reply.items} & set(stored)
        kept = await stub.NextItems(
            recsysllm_pb2.NextItemsRequest(user_id=user, k=4, include_seen=True), timeout=60
        )
        assert {item.item_id for item in kept.items} & set(stored)

    asyncio.run(_with_server(settings, check))


BAD_REQUESTS = [
    ("NextItems", recsysllm_pb2.NextItemsRequest(history=[601], k=5), "k must be between 1 and 4"),
    ("NextItems", recsysllm_pb2.NextItemsRequest(k=2), "give a user_id"),
    ("NextItems", recsysllm_pb2.NextItemsRequest(history=[601, 9999], k=2), "not in the catalog"),
    ("NextItems", recsysllm_pb2.NextItemsRequest(user_id=424242, k=2), "has no history"),
    (
        "RankCandidates",
        recsysllm_pb2.RankCandidatesRequest(history=[601]),
        "candidate_item_ids is empty",
    ),
    (
        "RankCandidates",
        recsysllm_pb2.RankCandidatesRequest(history=[601], candidate_item_ids=[602, 7777]),
        "candidate item 7777 is not in the catalog",
    ),
    (
        "RankCandidates",
        recsysllm_pb2.RankCandidatesRequest(history=[601], candidate_item_ids=list(ITEMS)),
        "at most 5",
    ),
    (
        "PredictRating",
        recsysllm_pb2.PredictRatingRequest(history=[601], item_id=5555),
        "item_id 5555 is not in the catalog",
    ),
    ("Explain", recsysllm_pb2.ExplainRequest(user_id=-1, item_id=601), "must not be negative"),
]


def test_bad_requests_get_invalid_argument_with_the_reason(world):
    settings = world[0]

    async def check(stub):
        for method, request, reason in BAD_REQUESTS:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await getattr(stub, method)(request, timeout=60)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, request)
            assert reason in raised.value.details(), raised.value.details()

    asyncio.run(_with_server(settings, check))
