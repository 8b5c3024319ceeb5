"""Inner-product top-k over item vectors with faiss.

Scores are dot products (the recommender's own scoring), so the index is an
inner-product one: exact `IndexFlatIP`, or IVF or HNSW for catalogs large
enough that an exact scan costs more than a little recall. `auto` (the default)
picks by catalog size, at the sizes `python -m bench.serving` measured
(docs/serving.md). On a GPU (with faiss-gpu installed) the index is moved there.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from streamrec.settings import ServingSettings

log = logging.getLogger(__name__)


KINDS = ("flat", "ivf", "hnsw")


def choose_index(settings: ServingSettings, size: int) -> str:
    """The index kind for a catalog of `size` items: the setting, or by size for `auto`."""
    if settings.index != "auto":
        return settings.index
    return "flat" if size < settings.index_auto_approximate_from else "hnsw"


def _gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class VectorIndex:
    """Rows of `vectors` are items `first_id`, `first_id + 1`, ...; search returns those ids."""

    def __init__(self, vectors: np.ndarray, settings: ServingSettings, first_id: int = 0):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.first_id = first_id
        self.size, dimension = vectors.shape
        self.kind = choose_index(settings, self.size)
        if self.kind == "flat":
            index = faiss.IndexFlatIP(dimension)
        elif self.kind == "ivf":
            lists = max(1, min(settings.ivf_lists, self.size // 39 or 1))
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(dimension), dimension, lists, faiss.METRIC_INNER_PRODUCT
            )
            index.train(vectors)
            index.nprobe = min(settings.ivf_probe, lists)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = settings.hnsw_ef_search
        else:
            raise ValueError(f"unknown serving.index {settings.index!r}: auto, flat, ivf or hnsw")
        index.add(vectors)
        if settings.use_gpu_index and _gpu_count() > 0 and self.kind != "hnsw":
            index = faiss.index_cpu_to_all_gpus(index)
            log.info("item index on GPU")
        self.faiss_index = index
        self.threads = settings.index_threads

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [B, k'], ids [B, k']) best first; k' = min(k, catalog size); -1 = no hit."""
        depth = max(1, min(k, self.size))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.threads:  # OpenMP's thread count is per calling thread: set it in this one
            faiss.omp_set_num_threads(self.threads)
        scores, rows = self.faiss_index.search(queries, depth)
        ids = np.where(rows >= 0, rows + self.first_id, -1)
        return scores, ids
