"""The first call of every method, in a fresh process: what it imports, how long it takes
against a warm call, and the longest the event loop went without a turn meanwhile.

`python -m tests.integration.first_calls SETTINGS_JSON FIRST_USER` starts the server with every
servicer (the registry of those settings holds the models), makes each method's first call
and then warm ones over loopback, and prints one JSON object. Used by
tests/integration/test_serving_loop.py; run by hand it shows the timings.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.server import build_servicers, start_server
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

WARM_CALLS = 5


def calls(channel, user_ids: list[int]):
    """(method, its n-th call) for every method of the four services; Recommend's n-th call
    is for the n-th user, so that each is a history cache miss like the first."""
    recommender = recommender_pb2_grpc.RecommenderServiceStub(channel)
    genrec = genrec_pb2_grpc.GenRecServiceStub(channel)
    llm = recsysllm_pb2_grpc.RecSysLLMServiceStub(channel)
    ops = ops_pb2_grpc.OpsServiceStub(channel)
    return [
        (
            "Recommend",
            lambda n: recommender.Recommend(
                recommender_pb2.RecommendRequest(user_id=user_ids[n], k=5), timeout=60
            ),
        ),  # noqa: E501
        (
            "Generate",
            lambda n: genrec.Generate(genrec_pb2.GenerateRequest(history=[501], k=5), timeout=60),
        ),  # noqa: E501
        (
            "NextItems",
            lambda n: llm.NextItems(recsysllm_pb2.NextItemsRequest(history=[601], k=2), timeout=60),
        ),  # noqa: E501
        (
            "RankCandidates",
            lambda n: llm.RankCandidates(
                recsysllm_pb2.RankCandidatesRequest(history=[601], candidate_item_ids=[602, 603]),
                timeout=60,
            ),
        ),  # noqa: E501
        (
            "PredictRating",
            lambda n: llm.PredictRating(
                recsysllm_pb2.PredictRatingRequest(history=[601], item_id=602), timeout=60
            ),
        ),  # noqa: E501
        (
            "Explain",
            lambda n: llm.Explain(
                recsysllm_pb2.ExplainRequest(history=[601], item_id=602), timeout=60
            ),
        ),  # noqa: E501
        ("ListJobs", lambda n: ops.ListJobs(ops_pb2.ListJobsRequest(), timeout=60)),
        ("GetJob", lambda n: ops.GetJob(ops_pb2.GetJobRequest(run_id="no-such-run"), timeout=60)),
    ]


async def timed(call, n: int) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        await call(n)
        code = "OK"
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    return (time.perf_counter() - started) * 1000, code


async def measure(settings: Settings, user_ids: list[int]) -> dict:
    server, port = await start_server(settings, build_servicers(settings))
    gaps = [0.0]

    async def ticker():
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            gaps.append((time.perf_counter() - before) * 1000 - 1)

    results = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The client's own first call (channel, stubs) is not the server's.
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            tick = asyncio.get_running_loop().create_task(ticker())
            for method, call in calls(channel, user_ids):
                known = set(sys.modules)
                gaps[:] = [0.0]
                first_ms, code = await timed(call, 0)
                imported = sorted(set(sys.modules) - known)
                stall_ms = max(gaps)
                warm = [(await timed(call, n))[0] for n in range(1, WARM_CALLS + 1)]
                results[method] = {
                    "code": code,
                    "first_ms": round(first_ms, 2),
                    "warm_ms": round(statistics.median(warm), 2),
                    "slowest_warm_ms": round(max(warm), 2),
                    "imported": imported,
                    "longest_loop_gap_ms": round(stall_ms, 2),
                }
            tick.cancel()
    finally:
        await server.stop(None)
    return results


def main() -> None:
    settings = Settings.model_validate_json(Path(sys.argv[1]).read_text())
    first_user = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    users = list(range(first_user, first_user + WARM_CALLS + 1))
    print(json.dumps(asyncio.run(measure(settings, users))))


if __name__ == "__main__":
    main()
