"""Serving benchmark: RecommenderService latency and throughput, and the index at scale.

    ./run bench serving --json bench/out/serving.json     # builds ghz first

MovieLens-100K is streamed through Kafka and the stream worker into ClickHouse
(services in a temporary data directory), a SASRec is trained on its training
split for a few epochs (unless --registry names one with a `seralm` version)
and published; `streamrec serve` runs as its own process. ghz (bench/ghz.py)
sends Recommend(user_id, k=10) for all 943 ml-100k users in a shuffled order
at concurrency 1, 8 and 32, after an unmeasured warm-up; `--layout split` pins
the server to core 0 and ghz to core 1. `--no-cache` adds a pass with the
history cache off (every request reads ClickHouse); `--profile 1 32` has py-spy
sample the server through one more level at each concurrency given. In the same run
the bare in-process path (model forward + faiss top-k for one history) gives
the floor, so the serving overhead is a ratio; and the item index is measured
on synthetic catalogs (bench/catalog.py).
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from pathlib import Path

from bench import pyspy
from bench.catalog import catalog_scale
from bench.common import isolated_settings, local_services, parser, percentile
from bench.ghz import figures, ghz_binary, ghz_version, pin, run_ghz, write_requests
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


def bare_latency(settings: Settings, version, histories: list[list[int]], n: int):
    """One history at a time through the model and faiss, in this process: the floor.
    Returns the loaded model too (its vectors seed the catalog scale)."""
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
    return served, {
        "bare_p50_ms": percentile(timings, 50),
        "bare_p99_ms": percentile(timings, 99),
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


LAYOUTS = {
    # server cores, ghz cores: "split" keeps the load generator off the server's core
    "split": ({0}, {1}),
    "shared": (None, None),
}


def serve_and_load(environment: dict, cache: bool, run: dict, workdir: Path) -> dict:
    """`streamrec serve` in its own process, loaded by ghz at each concurrency; with
    `run["profile"]` (concurrencies), py-spy samples it through one more level at each."""
    port, metrics_port = free_port(), free_port()
    env = {
        **environment,
        "STREAMREC_SERVING__PORT": str(port),
        "STREAMREC_SERVING__METRICS_PORT": str(metrics_port),
        "STREAMREC_SERVING__HISTORY_CACHE_TTL_S": environment.get(
            "STREAMREC_SERVING__HISTORY_CACHE_TTL_S", "2"
        )
        if cache
        else "0",
    }
    server_cores, ghz_cores = LAYOUTS[run["layout"]]
    log = workdir / f"serve-{'cache' if cache else 'nocache'}.log"
    server = StreamrecProcess(["serve"], env, log)
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: port_open(port), 120, "`streamrec serve` to listen", server)
        pin(server.process.pid, server_cores)
        load = lambda c, s: run_ghz(run["ghz"], target, run["data"], c, s, ghz_cores)  # noqa: E731
        load(max(CONCURRENCY), run["warmup"])  # first calls, caches, batch sizes
        results = {}
        for concurrency in CONCURRENCY:
            before = server_figures(metrics_port)
            results[str(concurrency)] = figures(load(concurrency, run["seconds"]))
            after = server_figures(metrics_port)
            delta = {key: after[key] - before[key] for key in after}
            # Inside the server: time in the handler, requests per forward.
            results[str(concurrency)]["server_mean_ms"] = round(
                1000 * delta["latency_sum"] / max(delta["latency_count"], 1), 3
            )
            results[str(concurrency)]["mean_batch"] = round(
                delta["batch_sum"] / max(delta["batch_count"], 1), 2
            )
            print(f"cache={cache} c={concurrency}: {results[str(concurrency)]}", flush=True)
        profiles = {}
        for concurrency in run["profile"]:
            raw = workdir / f"profile-c{concurrency}.txt"
            sampler = pyspy.start(server.process.pid, run["seconds"], raw)
            under = figures(load(concurrency, run["seconds"]))
            sampler.wait(timeout=120)
            profiles[str(concurrency)] = {"under_profile": under, **pyspy.summary(raw)}
        return {"concurrency": results, "profile": profiles}
    finally:
        server.stop()


def main() -> None:
    options = parser("serving", __doc__)
    options.add_argument("--registry", type=Path, help="a registry holding a seralm version")
    options.add_argument("--epochs", type=int, default=3, help="SASRec epochs when training here")
    options.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    options.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    options.add_argument("--bare", type=int, default=1000, help="bare-path queries")
    options.add_argument("--layout", choices=sorted(LAYOUTS), default="split")
    options.add_argument("--no-cache", action="store_true", help="also a pass without the cache")
    options.add_argument(
        "--profile", type=int, nargs="*", default=[], help="py-spy the server at these levels"
    )
    options.add_argument(
        "--catalog-sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000]
    )
    options.add_argument("--catalog-queries", type=int, default=300, help="searches per index")
    args = options.parse_args()
    ghz = ghz_binary(Settings())

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

        served, bare = bare_latency(settings, version, histories, args.bare)
        print(bare, flush=True)
        order = users * 20  # every user, in a shuffled order, many times over
        random.Random(1).shuffle(order)
        run = {
            "ghz": ghz,
            "data": write_requests(workdir / "requests.json", order, K),
            "seconds": args.seconds,
            "warmup": args.warmup,
            "layout": args.layout,
            "profile": args.profile,
        }
        cached = serve_and_load(environment, True, run, workdir)
        uncached = serve_and_load(environment, False, run, workdir) if args.no_cache else None

    from serving.recommender import user_vectors

    sequences = [
        [served.index_of[i] for i in h if i in served.index_of][-served.max_length :]
        for h in histories
    ]
    queries = user_vectors(served, [s for s in sequences if s])
    scale = catalog_scale(
        served.vectors[1:],
        queries,
        args.catalog_sizes,
        settings.serving,
        K + settings.serving.history_length,
        args.catalog_queries,
    )

    levels = cached["concurrency"]
    c1, c8, c32 = levels["1"], levels["8"], levels["32"]
    report = {
        "benchmark": "serving",
        "load_generator": "ghz",
        "ghz_version": ghz_version(ghz),
        "model": {
            "family": version.family,
            "version": version.version,
            "metadata": {k: version.metadata.get(k) for k in ("source", "epochs", "metrics")},
            "items": served.n_items - 1,
            "index": served.index.kind,
        },
        "k": K,
        "users": len(users),
        "seconds_per_level": args.seconds,
        "layout": {
            "name": args.layout,
            "server_cores": sorted(LAYOUTS[args.layout][0] or []) or "all",
            "ghz_cores": sorted(LAYOUTS[args.layout][1] or []) or "all",
            "ghz_connections": 1,
        },
        **{key: round(value, 3) for key, value in bare.items()},
        "concurrency": levels,
        **({"no_cache": {"concurrency": uncached["concurrency"]}} if uncached else {}),
        "overhead_ratio_c1": round(c1["p50_ms"] / bare["bare_p50_ms"], 2),
        "targets": {
            "p99_ms_at_8_le_10": c8["p99_ms"] <= 10,
            "rps_at_32_ge_1000": c32["rps"] >= 1000,
            "overhead_at_1_le_3x": c1["p50_ms"] <= 3 * bare["bare_p50_ms"],
        },
        **({"profile": cached["profile"]} if cached["profile"] else {}),
        "catalog_scale": scale,
        "paper_anchor": "SeRALM_rec 3.36 ms on an A100",
    }
    print(json.dumps(report, indent=2))
    print(f"wrote {write_result(args.json, report)}")


if __name__ == "__main__":
    main()
