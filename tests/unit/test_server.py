"""The gRPC server over loopback: every service is known, unbuilt methods say UNIMPLEMENTED."""

import asyncio
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from serving.server import SERVICES, start_server
from streamrec.settings import Settings
from streamrec.v1 import (
    genrec_pb2,
    genrec_pb2_grpc,
    ops_pb2,
    ops_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
    recsysllm_pb2,
    recsysllm_pb2_grpc,
)

UNBUILT_CALLS = [
    (
        recommender_pb2_grpc.RecommenderServiceStub,
        "Recommend",
        recommender_pb2.RecommendRequest(user_id=1, k=5),
    ),
    (genrec_pb2_grpc.GenRecServiceStub, "Generate", genrec_pb2.GenerateRequest(user_id=1, k=5)),
    (
        recsysllm_pb2_grpc.RecSysLLMServiceStub,
        "NextItems",
        recsysllm_pb2.NextItemsRequest(user_id=1),
    ),
    (
        recsysllm_pb2_grpc.RecSysLLMServiceStub,
        "RankCandidates",
        recsysllm_pb2.RankCandidatesRequest(user_id=1),
    ),
    (
        recsysllm_pb2_grpc.RecSysLLMServiceStub,
        "PredictRating",
        recsysllm_pb2.PredictRatingRequest(user_id=1),
    ),
    (recsysllm_pb2_grpc.RecSysLLMServiceStub, "Explain", recsysllm_pb2.ExplainRequest(user_id=1)),
    (ops_pb2_grpc.OpsServiceStub, "ListJobs", ops_pb2.ListJobsRequest()),
    (ops_pb2_grpc.OpsServiceStub, "GetJob", ops_pb2.GetJobRequest(run_id="x")),
]


def _settings() -> Settings:
    settings = Settings()
    return settings.model_copy(update={"serving": settings.serving.model_copy(update={"port": 0})})


async def _with_server(check):
    server, port = await start_server(_settings())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await check(channel)
    finally:
        await server.stop(None)


@pytest.mark.parametrize(("stub", "method", "request_message"), UNBUILT_CALLS)
def test_unbuilt_methods_answer_unimplemented(stub, method, request_message):
    async def check(channel):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await getattr(stub(channel), method)(request_message, timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED

    asyncio.run(_with_server(check))


def test_health_and_reflection_list_every_service():
    async def check(channel):
        health = health_pb2_grpc.HealthStub(channel)
        for name, _, _ in SERVICES:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        listed = set()
        async for reply in call:
            listed.update(s.name for s in reply.list_services_response.service)
        assert {name for name, _, _ in SERVICES} <= listed
        assert "grpc.health.v1.Health" in listed

    asyncio.run(_with_server(check))


def _with_settings(**serving) -> Settings:
    settings = _settings()
    return settings.model_copy(update={"serving": settings.serving.model_copy(update=serving)})


def test_token_auth_refuses_calls_without_a_valid_token_but_keeps_health_open():
    async def scenario():
        server, port = await start_server(_with_settings(auth_tokens=["s3cret", "other"]))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
                request = recommender_pb2.RecommendRequest(user_id=1, k=5)
                for metadata in (None, (("authorization", "Bearer wrong"),), (("x", "s3cret"),)):
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await stub.Recommend(request, metadata=metadata, timeout=5)
                    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "Bearer" in raised.value.details()
                # A valid token gets through to the (unbuilt) method.
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.Recommend(
                        request, metadata=(("authorization", "Bearer other"),), timeout=5
                    )
                assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_metrics_count_calls_by_method_and_code():
    from prometheus_client import REGISTRY

    def count(code):
        value = REGISTRY.get_sample_value(
            "streamrec_grpc_requests_total", {"method": "ListJobs", "code": code}
        )
        return value or 0.0

    before = count("UNIMPLEMENTED")

    async def check(channel):
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await ops_pb2_grpc.OpsServiceStub(channel).ListJobs(
                    ops_pb2.ListJobsRequest(), timeout=5
                )

    asyncio.run(_with_server(check))
    assert count("UNIMPLEMENTED") == before + 3
    observed = REGISTRY.get_sample_value(
        "streamrec_grpc_latency_seconds_count", {"method": "ListJobs"}
    )
    assert observed >= 3


@pytest.mark.parametrize("in_thread", [True, False])
def test_micro_batcher_groups_concurrent_calls_and_keeps_their_order(in_thread):
    from serving.batching import MicroBatcher

    batches = []

    def double(items):
        batches.append(list(items))
        return [2 * item for item in items]

    async def scenario():
        batcher = MicroBatcher(
            double, max_batch=8, max_wait_s=0.05, stage="test", in_thread=in_thread
        )
        try:
            results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        finally:
            await batcher.close()
        return results

    assert asyncio.run(scenario()) == [2 * i for i in range(20)]
    assert sorted(x for batch in batches for x in batch) == list(range(20))
    assert max(len(batch) for batch in batches) == 8
    assert len(batches) == 3


def test_a_failing_batch_fails_its_callers_only():
    from serving.batching import MicroBatcher

    def picky(items):
        if 13 in items:
            raise ValueError("unlucky batch")
        return items

    async def scenario():
        batcher = MicroBatcher(picky, max_batch=4, max_wait_s=0.0, stage="test")
        try:
            with pytest.raises(ValueError, match="unlucky"):
                await batcher.submit(13)
            return await batcher.submit(7)
        finally:
            await batcher.close()

    assert asyncio.run(scenario()) == 7


def test_tls_from_settings(tmp_path):
    key, certificate = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(certificate), "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    settings = _with_settings(tls_cert_file=str(certificate), tls_key_file=str(key))

    async def scenario():
        server, port = await start_server(settings)
        try:
            credentials = grpc.ssl_channel_credentials(root_certificates=certificate.read_bytes())
            async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5
                    )
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_a_lone_request_does_not_wait_for_company():
    import time

    from serving.batching import MicroBatcher

    async def scenario():
        batcher = MicroBatcher(lambda items: items, max_batch=8, max_wait_s=5.0, stage="test")
        try:
            started = time.monotonic()
            assert await batcher.submit(1) == 1
            return time.monotonic() - started
        finally:
            await batcher.close()

    assert asyncio.run(scenario()) < 2.0


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_vector_index_finds_the_best_inner_products(kind):
    import numpy as np

    from serving.index import VectorIndex

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    serving = Settings().serving.model_copy(
        update={"index": kind, "ivf_lists": 16, "ivf_probe": 16, "use_gpu_index": False}
    )
    index = VectorIndex(vectors, serving, first_id=1)
    scores, ids = index.search(queries, 10)

    exact = queries @ vectors.T
    for row in range(len(queries)):
        best = np.argsort(-exact[row])[:10] + 1  # ids start at first_id
        assert len(set(ids[row]) & set(best)) >= 9
        assert scores[row][0] == pytest.approx(exact[row].max(), rel=1e-4)
    assert index.search(queries, 5000)[1].shape == (5, 2000)  # k above the catalog size


def test_an_unknown_index_kind_is_refused():
    import numpy as np

    from serving.index import VectorIndex

    serving = Settings().serving.model_copy(update={"index": "annoy"})
    with pytest.raises(ValueError, match="flat, ivf or hnsw"):
        VectorIndex(np.zeros((3, 4), dtype=np.float32), serving)


def test_metrics_listen_on_loopback_unless_a_setting_opens_them():
    import socket
    import urllib.request

    from serving.server import start_metrics

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    for host, expected in ((None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")):
        serving = {"metrics_port": free_port()} | ({"metrics_host": host} if host else {})
        http_server = start_metrics(_with_settings(**serving))
        try:
            address, port = http_server.server_address[:2]
            assert address == expected
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            assert b"streamrec_grpc_requests_total" in body
        finally:
            http_server.shutdown()
            http_server.server_close()
