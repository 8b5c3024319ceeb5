"""The item index's choices: `auto` by catalog size, and one OpenMP thread per search."""

from __future__ import annotations

import threading

import faiss
import numpy as np

from serving.index import VectorIndex, choose_index
from streamrec.settings import Settings


def serving_settings(**update):
    return Settings().serving.model_copy(update={"use_gpu_index": False, **update})


def test_auto_is_exact_for_small_catalogs_and_hnsw_for_large_ones():
    serving = serving_settings(index="auto", index_auto_approximate_from=500)
    rng = np.random.default_rng(0)
    small = VectorIndex(rng.normal(size=(499, 8)).astype(np.float32), serving)
    large = VectorIndex(rng.normal(size=(500, 8)).astype(np.float32), serving)
    assert (small.kind, large.kind) == ("flat", "hnsw")
    assert isinstance(small.faiss_index, faiss.IndexFlatIP)
    assert isinstance(large.faiss_index, faiss.IndexHNSWFlat)
    # A kind named in the settings is kept whatever the size.
    assert choose_index(serving_settings(index="ivf"), 10) == "ivf"
    assert Settings().serving.index == "auto"


def test_a_search_runs_on_the_configured_openmp_threads_in_any_thread():
    rng = np.random.default_rng(0)
    index = VectorIndex(rng.normal(size=(100, 8)).astype(np.float32), serving_settings())
    seen = []

    def search():  # a fresh thread starts with OpenMP's default (all cores)
        index.search(rng.normal(size=(2, 8)).astype(np.float32), 5)
        seen.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=search)
    worker.start()
    worker.join()
    assert seen == [Settings().serving.index_threads] == [1]
