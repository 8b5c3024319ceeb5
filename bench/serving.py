"""Serving benchmark: RecommenderService latency and throughput with ClickHouse histories.

    python -m bench.serving --json bench/out/serving.json

MovieLens-100K is streamed through Kafka and the stream worker into ClickHouse
(services in a temporary data directory), a SASRec is trained on its training
split for a few epochs (unless --registry names one with a `seralm` version)
and published; `streamrec serve` runs as its own process. A load generator
process sends Recommend(user_id, k=10) for random ml-100k users at concurrency
1, 8 and 32, with the history cache on and then off (ttl 0: every request reads
ClickHouse). In the same run the bare in-process path (model forward + faiss
top-k for one history) gives the floor, so the serving overhead is a ratio.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import isolated_settings, local_services, parser, percentile
from bench.results import write_result
from streamrec.db import count_rows
from streamrec.registry import ModelRegistry
from streamrec.services import free_port
from streamrec.services.children import StreamrecProcess, StreamWorker, wait_for
from streamrec.services.process import port_open
from streamrec.settings import Settings
from workers.recommender_training import train_first_model

CONCURRENCY = (1, 8, 32)
K = 10


def bare_latency(settings: Settings, version, histories: list[list[int]], n: int) -> dict:
    """One history at a time through the model and faiss, in this process: the floor."""
    from serving.recommender import Query, load_serving_model, run_batch, set_torch_threads

    set_torch_threads(settings)  # as the server does
    served = load_serving_model(version, settings)
    timings = []
    for history in (histories * (n // len(histories) + 1))[:n]:
        sequence = [served.index_of[i] for i in history if i in served.index_of]
        sequence = sequence[-served.max_length :]
        excluded = set(sequence)
        started = time.perf_counter()
        run_batch([Query(served, sequence, K, excluded)])
        timings.append((time.perf_counter() - started) * 1000)
    timings = timings[n // 10 :]  # warm-up
    return {"bare_p50_ms": percentile(timings, 50), "bare_p99_ms": percentile(timings, 99)}


# --- load ------------------------------------------------------------------------


LOAD_SCRIPT = r"""
import asyncio, json, random, sys, time
import grpc
from streamrec.v1 import recommender_pb2, recommender_pb2_grpc

target, concurrency = sys.argv[1], int(sys.argv[2])
seconds, warmup, k = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[6])
users = json.loads(sys.argv[5])

async def main():
    latencies, errors = [], []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        rng = random.Random(0)
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + seconds

        async def worker():
            while True:
                now = time.perf_counter()
                if now >= stop:
                    return
                request = recommender_pb2.RecommendRequest(user_id=rng.choice(users), k=k)
                try:
                    await stub.Recommend(request, timeout=10)
                    done = time.perf_counter()
                    if now >= measure_from:
                        latencies.append((done - now) * 1000)
                except grpc.aio.AioRpcError as error:
                    errors.append(error.code().name)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps({"latencies": latencies, "errors": errors, "seconds": seconds}))

asyncio.run(main())
"""


def run_load(port: int, concurrency: int, seconds: float, warmup: float, users: list[int]) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            f"127.0.0.1:{port}",
            str(concurrency),
            str(seconds),
            str(warmup),
            json.dumps(users),
            str(K),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    latencies = data["latencies"]
    return {
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "rps": round(len(latencies) / data["seconds"], 1),
        "requests": len(latencies),
        "errors": len(data["errors"]),
    }


def server_figures(metrics_port: int) -> dict[str, float]:
    """The server's own sums and counts: Recommend latency and model batch sizes."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    wanted = {
        ("streamrec_grpc_latency_seconds_sum", "Recommend"): "latency_sum",
        ("streamrec_grpc_latency_seconds_count", "Recommend"): "latency_count",
        ("streamrec_serving_batch_size_sum", "model"): "batch_sum",
        ("streamrec_serving_batch_size_count", "model"): "batch_count",
    }
    figures = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            label = sample.labels.get("method") or sample.labels.get("stage")
            if (sample.name, label) in wanted:
                figures[wanted[(sample.name, label)]] = sample.value
    return figures


def serve_and_load(environment: dict, cache: bool, users, seconds, warmup, workdir) -> dict:
    port, metrics_port = free_port(), free_port()
    env = {
        **environment,
        "STREAMREC_SERVING__PORT": str(port),
        "STREAMREC_SERVING__METRICS_PORT": str(metrics_port),
        "STREAMREC_SERVING__HISTORY_CACHE_TTL_S": "60" if cache else "0",
    }
    log = workdir / f"serve-{'cache' if cache else 'nocache'}.log"
    server = StreamrecProcess(["serve"], env, log)
    server.start()
    try:
        wait_for(lambda: port_open(port), 120, "`streamrec serve` to listen", server)
        results = {}
        for concurrency in CONCURRENCY:
            before = server_figures(metrics_port)
            results[str(concurrency)] = run_load(port, concurrency, seconds, warmup, users)
            after = server_figures(metrics_port)
            delta = {key: after[key] - before[key] for key in after}
            # Inside the server (warm-up included): time in the handler, requests per forward.
            results[str(concurrency)]["server_mean_ms"] = round(
                1000 * delta["latency_sum"] / max(delta["latency_count"], 1), 3
            )
            results[str(concurrency)]["mean_batch"] = round(
                delta["batch_sum"] / max(delta["batch_count"], 1), 2
            )
            print(f"cache={cache} c={concurrency}: {results[str(concurrency)]}", flush=True)
        return results
    finally:
        server.stop()


def main() -> None:
    options = parser("serving", __doc__)
    options.add_argument("--registry", type=Path, help="a registry holding a seralm version")
    options.add_argument("--epochs", type=int, default=3, help="SASRec epochs when training here")
    options.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    options.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    options.add_argument("--bare", type=int, default=1000, help="bare-path queries")
    args = options.parse_args()

    with local_services("streamrec-bench-serving-") as (workdir, launcher):
        settings, environment = isolated_settings(
            launcher,
            STREAMREC_REGISTRY__ROOT=str(args.registry or workdir / "registry"),
            STREAMREC_SERVING__RELOAD_FROM_TOPIC="false",
        )

        from streamrec.datasets import load_dataset
        from streams.replay import replay_dataset

        registry = ModelRegistry.from_settings(settings)
        version = registry.latest(settings.recommender.family) or train_first_model(
            settings, load_dataset("ml-100k", settings), args.epochs
        )
        print(f"model {version.family}/{version.version} at {version.path}", flush=True)

        worker = StreamWorker(settings, environment, workdir / "worker.log")
        worker.start()
        try:
            summary = replay_dataset(settings, "ml-100k")
            wait_for(
                lambda: count_rows(settings, "interactions") >= summary.interactions,
                900,
                "ml-100k rows",
                worker,
            )
        finally:
            worker.stop()
        dataset = load_dataset("ml-100k", settings)
        users = sorted({u.external_id for u in dataset.users.values()})

        from streamrec.history import HistoryStore

        store = HistoryStore(settings)
        sample = random.Random(0).sample(users, 200)
        recent = store.batch_recent(sample, settings.serving.history_length)
        store.close()
        histories = [[e.item_id for e in recent[u]] for u in sample if u in recent]

        bare = bare_latency(settings, version, histories, args.bare)
        print(bare, flush=True)
        cached = serve_and_load(environment, True, users, args.seconds, args.warmup, workdir)
        uncached = serve_and_load(environment, False, users, args.seconds, args.warmup, workdir)

    c1, c8, c32 = cached["1"], cached["8"], cached["32"]
    report = {
        "benchmark": "serving",
        "model": {
            "family": version.family,
            "version": version.version,
            "metadata": {k: version.metadata.get(k) for k in ("source", "epochs", "metrics")},
        },
        "k": K,
        "seconds_per_level": args.seconds,
        **{key: round(value, 3) for key, value in bare.items()},
        "concurrency": cached,
        "no_cache": {"concurrency": uncached},
        "overhead_ratio_c1": round(c1["p50_ms"] / bare["bare_p50_ms"], 2),
        "targets": {
            "p99_ms_at_8_le_10": c8["p99_ms"] <= 10,
            "rps_at_32_ge_1000": c32["rps"] >= 1000,
            "overhead_at_1_le_3x": c1["p50_ms"] <= 3 * bare["bare_p50_ms"],
        },
        "paper_anchor": "SeRALM_rec 3.36 ms on an A100",
    }
    print(json.dumps(report, indent=2))
    print(f"wrote {write_result(args.json, report)}")


if __name__ == "__main__":
    main()
