"""faiss on a GPU against faiss on the CPU: the serving index over a synthetic catalog.

    python -m bench.faiss_gpu --json OUT [--items 1000000] [--queries 1024] [--kinds flat ivf]

Each kind is built through `serving.index.VectorIndex` (the server's code and settings),
once with `serving.use_gpu_index` off and once on. The GPU side needs faiss-gpu (the
`gpu` extra) and a GPU; without them its rows say why and only the CPU is measured. The
items are drawn like `bench/catalog.py` draws them, from a Gaussian with a fixed random
covariance (no trained model is needed here: the search cost does not depend on where
the vectors came from). Figures per (kind, device): build seconds, batched throughput
(queries/s over `--queries` at once), single-query p50/p99 ms at the depth a Recommend
call asks for, and recall@10 against the exact CPU answer.
"""

from __future__ import annotations

import json
import time

import faiss
import numpy as np

from bench.catalog import recall_at, synthetic_items
from bench.common import percentile
from bench.results import write_result
from serving.index import VectorIndex
from streamrec.settings import ServingSettings

DEPTH = 60  # k = 10 plus a long history excluded


def gpu_status() -> str | None:
    """Why the GPU side cannot run, or None when it can."""
    if not hasattr(faiss, "StandardGpuResources"):
        return "this faiss has no GPU support (faiss-cpu); install the gpu extra"
    if faiss.get_num_gpus() < 1:
        return "faiss sees no GPU"
    return None


def measure(items, queries, kind: str, on_gpu: bool, single: int) -> tuple[dict, np.ndarray]:
    settings = ServingSettings(index=kind, use_gpu_index=on_gpu, index_threads=0)
    started = time.perf_counter()
    index = VectorIndex(items, settings)
    build_s = time.perf_counter() - started
    index.search(queries[:8], DEPTH)  # warm-up (GPU kernels, threads)
    started = time.perf_counter()
    _, top = index.search(queries, DEPTH)
    batch_s = time.perf_counter() - started
    timings = []
    for row in range(single):
        started = time.perf_counter()
        index.search(queries[row % len(queries)][None], DEPTH)
        timings.append((time.perf_counter() - started) * 1000)
    row = {
        "kind": kind,
        "device": "gpu" if on_gpu else "cpu",
        "items": len(items),
        "build_s": round(build_s, 2),
        "batch_queries_per_s": round(len(queries) / batch_s, 1),
        "single_p50_ms": round(percentile(timings, 50), 3),
        "single_p99_ms": round(percentile(timings, 99), 3),
    }
    return row, top[:, :10]


def main() -> None:
    from bench.common import parser

    options = parser("faiss_gpu", __doc__)
    options.add_argument("--items", type=int, default=1_000_000)
    options.add_argument("--dimension", type=int, default=64)
    options.add_argument("--queries", type=int, default=1024)
    options.add_argument("--single", type=int, default=200, help="Single-query searches timed.")
    options.add_argument("--kinds", nargs="+", default=["ivf"], help="Kinds beside flat.")
    args = options.parse_args()
    kinds = ["flat", *(kind for kind in args.kinds if kind not in ("flat", "hnsw"))]

    rng = np.random.default_rng(0)
    shape = rng.normal(size=(args.dimension, args.dimension)) / np.sqrt(args.dimension)
    model_like = rng.normal(size=(4096, args.dimension)) @ shape
    items = synthetic_items(model_like, args.items)
    queries = synthetic_items(model_like, args.queries, seed=1)
    why_not = gpu_status()
    rows, exact = [], None
    for kind in kinds:  # flat on the CPU first: the exact answer
        for on_gpu in (False, True):
            if on_gpu and why_not:
                rows.append({"kind": kind, "device": "gpu", "skipped": why_not})
                continue
            row, top = measure(items, queries, kind, on_gpu, args.single)
            exact = top if exact is None else exact  # the first: flat on the CPU
            row["recall@10"] = round(recall_at(top, exact, 10), 4)
            print(row, flush=True)
            rows.append(row)
            write_result(args.json, {"rows": rows, "gpu": why_not or "used"})
    report = {"rows": rows, "gpu": why_not or "used", "faiss": faiss.__version__}
    write_result(args.json, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
