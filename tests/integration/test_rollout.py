"""Safe rollout: a version is served only once it loads and passes its smoke check; a
(re)started server falls back to the newest one that does, marks the others failed in the
registry, and says NOT_SERVING per service while it has none. Real registry folders, tiny
real models, the real ClickHouse, gRPC and the ops page on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.server import GENREC, OPS, RECOMMENDER, RECSYSLLM, build_servicers
from streamrec.registry import ModelRegistry
from streamrec.v1 import recommender_pb2, recommender_pb2_grpc
from tests.integration.helpers import served, server_settings, store_history
from tests.unit.recommender_helpers import TINY_SASREC

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")

ITEMS = np.arange(0, 21, dtype=np.int64) * 10  # 0 is padding
USER, HISTORY = 5, [10, 20, 30]


def _model(seed: int = 0):
    from models.sequential import build_recommender

    torch.manual_seed(seed)
    return build_recommender("sasrec", len(ITEMS), dict(TINY_SASREC)).eval()


def _publish_good(registry, folder):
    _model().save_pretrained(folder, ITEMS)
    return registry.add("seralm", folder)


def _publish_truncated(registry, folder):
    """Files that do not load: the weights cut in half after publishing."""
    version = _publish_good(registry, folder)
    weights = version.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return version


def _publish_nan(registry, folder):
    """A version that loads but scores NaN: its smoke check fails."""
    model = _model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    model.save_pretrained(folder, ITEMS)
    return registry.add("seralm", folder)


@pytest.fixture
def rollout_settings(services, tmp_path):
    settings = server_settings(services.settings, tmp_path, "rollout")
    store_history(settings, USER, HISTORY, "rollout")
    return settings


@contextlib.asynccontextmanager
async def _server(settings, names=None):
    async with served(settings, build_servicers(settings, names)) as (_, channel):
        yield channel


async def _health(channel, service: str):
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return reply.status


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_a_restarted_server_falls_back_to_the_newest_version_that_works(rollout_settings, tmp_path):
    registry = ModelRegistry.from_settings(rollout_settings)
    good = _publish_good(registry, tmp_path / "good")
    truncated = _publish_truncated(registry, tmp_path / "truncated")
    nan = _publish_nan(registry, tmp_path / "nan")

    async def scenario():
        async with _server(rollout_settings, [RECOMMENDER]) as channel:
            assert await _health(channel, RECOMMENDER) == SERVING
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            reply = await stub.Recommend(
                recommender_pb2.RecommendRequest(user_id=USER, k=5), timeout=10
            )
            assert reply.model_version == good.version and not reply.cold_start
            assert all(np.isfinite(item.score) for item in reply.items)

    asyncio.run(scenario())
    refused = {entry.version: entry.reason for entry in registry.failed("seralm")}
    assert set(refused) == {truncated.version, nan.version}
    assert "model.safetensors" in refused[truncated.version]
    assert "not finite" in refused[nan.version]


def test_no_usable_model_is_not_serving_until_one_is_published(rollout_settings, tmp_path):
    registry = ModelRegistry.from_settings(rollout_settings)
    broken = _publish_nan(registry, tmp_path / "nan")

    async def scenario():
        async with _server(rollout_settings) as channel:
            for name in (RECOMMENDER, GENREC, RECSYSLLM):  # nothing usable for any of them
                assert await _health(channel, name) == NOT_SERVING, name
            assert await _health(channel, OPS) == SERVING
            assert await _health(channel, "") == SERVING  # the server itself is up
            assert [e.version for e in registry.failed("seralm")] == [broken.version]

            good = await asyncio.to_thread(_publish_good, registry, tmp_path / "good")
            for _ in range(100):  # the registry is polled every 0.3 s
                if await _health(channel, RECOMMENDER) == SERVING:
                    break
                await asyncio.sleep(0.1)
            assert await _health(channel, RECOMMENDER) == SERVING
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            reply = await stub.Recommend(
                recommender_pb2.RecommendRequest(user_id=USER, k=5), timeout=10
            )
            assert reply.model_version == good.version

    asyncio.run(scenario())


def test_the_ops_page_lists_the_refused_versions(rollout_settings, tmp_path):
    from serving.ops import start_status_page

    registry = ModelRegistry.from_settings(rollout_settings)
    _publish_good(registry, tmp_path / "good")
    nan = _publish_nan(registry, tmp_path / "nan")
    settings = rollout_settings.model_copy(deep=True)
    settings.ops.page_port = 0

    async def scenario():
        async with _server(settings, [RECOMMENDER]):
            pass
        runner, port = await start_status_page(settings)
        try:
            url = f"http://127.0.0.1:{port}/"
            return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        finally:
            await runner.cleanup()

    page = asyncio.run(scenario()).decode()
    assert f'data-version="seralm/{nan.version}"' in page
    assert "not finite" in page
