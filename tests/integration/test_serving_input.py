"""Bytes no request decodes from, oversized strings and failing reads, on every service.

The real server with every real servicer (an empty registry: decoding comes before any
model), on loopback, with the real ClickHouse; calls send raw bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from serving.server import build_servicers
from streamrec.v1 import genrec_pb2, ops_pb2, recommender_pb2, recsysllm_pb2
from tests.integration.helpers import served, server_settings

# (full method, a valid request whose last field is cut by the truncation)
METHODS = [
    (
        "/streamrec.v1.RecommenderService/Recommend",
        recommender_pb2.RecommendRequest(user_id=1, history=[5, 6, 700], k=5),
    ),
    (
        "/streamrec.v1.GenRecService/Generate",
        genrec_pb2.GenerateRequest(user_id=1, history=[5, 6, 700], k=5),
    ),
    (
        "/streamrec.v1.RecSysLLMService/NextItems",
        recsysllm_pb2.NextItemsRequest(user_id=1, history=[5, 6, 700], k=5),
    ),
    (
        "/streamrec.v1.RecSysLLMService/RankCandidates",
        recsysllm_pb2.RankCandidatesRequest(user_id=1, candidate_item_ids=[5, 6, 700]),
    ),
    (
        "/streamrec.v1.RecSysLLMService/PredictRating",
        recsysllm_pb2.PredictRatingRequest(user_id=1, history=[5], item_id=70000),
    ),
    (
        "/streamrec.v1.RecSysLLMService/Explain",
        recsysllm_pb2.ExplainRequest(user_id=1, history=[5], item_id=70000),
    ),
    ("/streamrec.v1.OpsService/ListJobs", ops_pb2.ListJobsRequest(kind="trainer", limit=300)),
    ("/streamrec.v1.OpsService/GetJob", ops_pb2.GetJobRequest(run_id="a-run-id")),
]
IDS = [method.rsplit("/", 1)[1] for method, _ in METHODS]
GARBAGE = b"\xff\xff\xff\xff\xff"
TOKEN = "input-test-token"


@pytest.fixture(scope="module")
def input_settings(services, tmp_path_factory):
    return server_settings(services.settings, tmp_path_factory.mktemp("input"), "input")


@contextlib.asynccontextmanager
async def _server(settings):
    async with served(settings, build_servicers(settings)) as (_, channel):
        yield channel


async def _raw_call(channel, method: str, payload: bytes, metadata=None):
    """`payload` sent as it is; the error the server answered with."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(payload, metadata=metadata, timeout=10)
    return raised.value


def _count(method: str, code: str) -> float:
    name = method.rsplit("/", 1)[1]
    labels = {"method": name, "code": code}
    return REGISTRY.get_sample_value("streamrec_grpc_requests_total", labels) or 0.0


def _problems(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


@pytest.mark.parametrize(("method", "request_message"), METHODS, ids=IDS)
def test_undecodable_bytes_get_invalid_argument_counted_and_no_log(
    input_settings, method, request_message, caplog
):
    valid = request_message.SerializeToString()
    cases = [(GARBAGE, "could not be decoded"), (valid[:-1], "could not be decoded")]

    async def scenario():
        async with _server(input_settings) as channel:
            before = _count(method, "INVALID_ARGUMENT")
            with caplog.at_level(logging.DEBUG, logger="serving"):
                caplog.clear()
                for payload, reason in cases:
                    error = await _raw_call(channel, method, payload)
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, payload
                    assert reason in error.details()
                    assert request_message.DESCRIPTOR.full_name in error.details()
                assert _problems(caplog) == []  # debug lines only, no traceback
            assert _count(method, "INVALID_ARGUMENT") == before + len(cases)

    asyncio.run(scenario())


@pytest.mark.parametrize(("method", "request_message"), METHODS, ids=IDS)
def test_unauthenticated_garbage_is_refused_before_it_is_decoded(
    input_settings, method, request_message
):
    settings = input_settings.model_copy(deep=True)
    settings.serving.auth_tokens = [TOKEN]

    async def scenario():
        async with _server(settings) as channel:
            for metadata in (None, (("authorization", "Bearer wrong"),)):
                error = await _raw_call(channel, method, GARBAGE, metadata)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            # With the token, the same bytes reach the decoder.
            error = await _raw_call(
                channel, method, GARBAGE, (("authorization", f"Bearer {TOKEN}"),)
            )
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())


def test_ops_refuses_invalid_utf8_and_megabyte_strings(input_settings):
    megabyte = "x" * (1 << 20)
    limit = input_settings.serving.max_string_length
    # run_id = "ab" + two bytes no UTF-8 text has.
    invalid_utf8 = b"\x0a\x04ab\xff\xfe"

    async def scenario():
        async with _server(input_settings) as channel:
            error = await _raw_call(channel, "/streamrec.v1.OpsService/GetJob", invalid_utf8)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "UTF-8" in error.details()
            for method, message, field in [
                ("ListJobs", ops_pb2.ListJobsRequest(kind=megabyte), "kind"),
                ("GetJob", ops_pb2.GetJobRequest(run_id=megabyte), "run_id"),
            ]:
                payload = message.SerializeToString()
                error = await _raw_call(channel, f"/streamrec.v1.OpsService/{method}", payload)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert f"{field} is {len(megabyte)} characters long" in error.details()
                assert f"at most {limit}" in error.details()
                assert len(error.details()) < 200

    asyncio.run(scenario())


def test_a_failing_read_answers_internal_without_its_text(input_settings, caplog):
    settings = input_settings.model_copy(deep=True)
    settings.clickhouse.database = "no_such_database_here"

    async def scenario():
        async with _server(settings) as channel:
            for method, message in [METHODS[0], *METHODS[-2:]]:  # those that read
                with caplog.at_level(logging.ERROR, logger="serving"):
                    caplog.clear()
                    error = await _raw_call(channel, method, message.SerializeToString())
                assert error.code() == grpc.StatusCode.INTERNAL
                assert "no_such_database_here" not in error.details()
                assert "server log" in error.details()
                # The server's log has what went wrong.
                assert any(
                    "no_such_database_here" in str(r.exc_info[1])
                    for r in caplog.records
                    if r.exc_info
                )

    asyncio.run(scenario())
