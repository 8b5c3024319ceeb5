"""The serving bench's catalog scale: the item index at 10^4..10^6 items, in process.

A served model's catalog is ml-100k's 1,682 items; larger ones are synthetic. Their item
vectors are drawn from a Gaussian with the mean and covariance of the trained model's
item vectors, and the queries are the model's own user vectors of real ml-100k
histories, so scores spread as they do in serving. Each index kind is built through
`serving.index.VectorIndex` (the server's code and settings) and timed on one query at a
time at the depth a Recommend call asks for (k plus the excluded history); recall@10 is
against the exact `flat` answer of the same queries. Memory is the index's serialized
size (vectors plus, for ivf and hnsw, their lists or graph). The gRPC path is not driven
at these sizes: a model with 10^6 item embeddings would be as synthetic as these vectors,
and the forward does not depend on the catalog; the search is the part that grows.
"""

from __future__ import annotations

import time

import faiss
import numpy as np

from bench.common import percentile
from serving.index import KINDS, VectorIndex, choose_index
from streamrec.settings import ServingSettings


def synthetic_items(vectors: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` item vectors distributed like the model's own (`vectors`, one per row)."""
    rng = np.random.default_rng(seed)
    mean = vectors.mean(axis=0)
    covariance = np.cov(vectors, rowvar=False)
    drawn = rng.multivariate_normal(mean, covariance, size=count, method="cholesky")
    return np.ascontiguousarray(drawn, dtype=np.float32)


def recall_at(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k that `found`'s top-k holds."""
    hits = [len(set(f[:k]) & set(e[:k])) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / k


def measure(
    items: np.ndarray, queries: np.ndarray, kind: str, settings: ServingSettings, depth: int, n: int
) -> tuple[dict, np.ndarray]:
    """One index kind over `items`: build, latency of `n` single-query searches, memory;
    and its top-10 of every query (for recall)."""
    chosen = settings.model_copy(update={"index": kind})
    started = time.perf_counter()
    index = VectorIndex(items, chosen)
    build_s = time.perf_counter() - started
    for query in queries[:20]:  # warm caches and threads
        index.search(query[None], depth)
    timings = []
    for row in range(n):
        query = queries[row % len(queries)][None]
        started = time.perf_counter()
        index.search(query, depth)
        timings.append((time.perf_counter() - started) * 1000)
    _, top = index.search(queries, 10)
    row = {
        "items": len(items),
        "index": kind,
        "p50_ms": round(percentile(timings, 50), 3),
        "p99_ms": round(percentile(timings, 99), 3),
        "build_s": round(build_s, 2),
        "memory_mb": round(faiss.serialize_index(index.faiss_index).nbytes / 2**20, 1),
    }
    return row, top


def catalog_scale(
    item_vectors: np.ndarray,
    user_vectors: np.ndarray,
    sizes: list[int],
    settings: ServingSettings,
    depth: int,
    n: int,
) -> list[dict]:
    """Rows of {items, index, p50_ms, p99_ms, recall@10, build_s, memory_mb, auto}."""
    rows = []
    for size in sizes:
        items = synthetic_items(item_vectors, size)
        exact = None
        for kind in KINDS:
            row, top = measure(items, user_vectors, kind, settings, depth, n)
            if kind == "flat":
                exact = top
            row["recall@10"] = round(recall_at(top, exact, 10), 4)
            row["auto"] = choose_index(settings, size) == kind
            print(row, flush=True)
            rows.append(row)
    return rows
