"""RecommenderService: SeRALM recommendations from ClickHouse histories.

history (request, or ClickHouse through a TTL cache) -> the registry's latest
`seralm` recommender -> user vector (micro-batched forward) -> faiss top-k
over the item vectors -> seen/excluded ids removed, candidates respected.
A user with no usable history gets popular recent items (cold start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from serving.batching import MicroBatcher
from serving.history_cache import HistoryCache
from serving.holder import ModelHolder, SmokeCheckFailed
from serving.index import VectorIndex
from serving.kit import (
    answer,
    check_deadline,
    check_k,
    check_known,
    check_list_size,
    check_user_or_history,
)
from serving.popular import PopularItems
from streamrec.registry import ModelVersion
from streamrec.settings import Settings
from streamrec.v1 import recommender_pb2, recommender_pb2_grpc

log = logging.getLogger(__name__)


def set_torch_threads(settings: Settings) -> None:
    import torch

    if settings.serving.torch_threads:
        torch.set_num_threads(settings.serving.torch_threads)


@dataclass
class ServingModel:
    """One loaded version: the model, its item vectors in an index, and the id mapping."""

    version: str
    model: object
    device: str
    item_ids: np.ndarray  # external id per model index; index 0 is padding
    index_of: dict[int, int]
    vectors: np.ndarray  # float32 [n_items, D], row 0 (padding) unused
    index: VectorIndex
    max_length: int

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def load_serving_model(version: ModelVersion, settings: Settings) -> ServingModel:
    """Load a `seralm` version (a sequential recommender's artifact) and index its item
    vectors; a missing or damaged file raises, so the holder keeps the served version."""
    import torch

    from models.device import resolve_device
    from models.sequential import SequentialRecommender

    device = str(resolve_device(settings.serving.device))
    loaded = SequentialRecommender.from_pretrained(version.path, device=device)
    model = loaded.model.to(device).eval()
    with torch.inference_mode():
        vectors = model.item_representations().float().cpu().numpy()
    item_ids = np.asarray(loaded.item_ids, dtype=np.int64)
    max_length = model.config.max_seq_length
    return ServingModel(
        version=version.version,
        model=model,
        device=device,
        item_ids=item_ids,
        index_of={int(item): index for index, item in enumerate(item_ids) if index > 0},
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        index=VectorIndex(vectors[1:], settings.serving, first_id=1),
        max_length=min(max_length, settings.serving.history_length),
    )


def smoke_check(served: ServingModel) -> None:
    """Serve a version only if a forward gives finite scores and the index finds items."""
    if served.n_items < 2:
        raise SmokeCheckFailed(f"{served.version} has no items")
    vector = user_vectors(served, [[1]])
    if not (np.isfinite(vector).all() and np.isfinite(served.vectors[1:]).all()):
        raise SmokeCheckFailed(f"{served.version} gives scores that are not finite")
    scores, ids = served.index.search(vector, min(10, served.n_items - 1))
    if not ((ids[0] > 0).any() and np.isfinite(scores[0][ids[0] > 0]).all()):
        raise SmokeCheckFailed(f"{served.version}: its item index finds nothing")


@dataclass
class Query:
    """One request's share of a micro-batch, in model indices."""

    served: ServingModel
    sequence: list[int]
    k: int
    excluded: set[int] = field(default_factory=set)
    candidates: np.ndarray | None = None


def user_vectors(served: ServingModel, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """The model's user representations of left-aligned, zero-padded sequences (RecBole)."""
    import torch

    lengths = [len(sequence) for sequence in sequences]
    padded = np.zeros((len(sequences), max(lengths)), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
    with torch.inference_mode():
        vectors = served.model.user_representation(
            torch.from_numpy(padded).to(served.device),
            torch.tensor(lengths, dtype=torch.long, device=served.device),
        )
    return vectors.float().cpu().numpy()


def top_k(served: ServingModel, vector: np.ndarray, query: Query, found=None):
    """(model indices, scores) of the best `query.k` items for one user vector."""
    if query.candidates is not None:
        pool = np.array([i for i in query.candidates if i not in query.excluded], dtype=np.int64)
        scores = served.vectors[pool] @ vector
        order = np.argsort(-scores, kind="stable")[: query.k]
        return pool[order], scores[order]
    indices, scores = found
    # Python ints (not numpy scalars) against the set, and no further than the k-th kept:
    # the search is `k + excluded` deep, and most of it is not needed.
    keep = []
    for j, index in enumerate(indices.tolist()):
        if index > 0 and index not in query.excluded:
            keep.append(j)
            if len(keep) == query.k:
                break
    return indices[keep], scores[keep]


def run_batch(queries: Sequence[Query]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One forward per model version in the batch, one faiss search for the open queries."""
    results: list = [None] * len(queries)
    by_model: dict[int, list[int]] = {}
    for position, query in enumerate(queries):
        by_model.setdefault(id(query.served), []).append(position)
    for positions in by_model.values():
        served = queries[positions[0]].served
        vectors = user_vectors(served, [queries[p].sequence for p in positions])
        open_rows = [row for row, p in enumerate(positions) if queries[p].candidates is None]
        searched = {}
        if open_rows:
            depth = max(
                queries[positions[r]].k + len(queries[positions[r]].excluded) for r in open_rows
            )
            scores, indices = served.index.search(vectors[open_rows], depth)
            searched = {row: (indices[n], scores[n]) for n, row in enumerate(open_rows)}
        for row, position in enumerate(positions):
            results[position] = top_k(served, vectors[row], queries[position], searched.get(row))
    return results


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    def __init__(self, settings: Settings, history: HistoryCache | None = None):
        self.settings = settings
        serving = settings.serving
        self.holder: ModelHolder[ServingModel] = ModelHolder(
            settings,
            settings.recommender.family,
            lambda version: load_serving_model(version, settings),
            smoke=smoke_check,
        )
        self.history = history or HistoryCache(settings)
        self.popular = PopularItems(settings)
        self.batcher = MicroBatcher(
            run_batch,
            serving.max_batch,
            serving.max_wait_ms / 1000,
            stage="model",
            inline_below=serving.forward_on_loop_below,
        )

    async def start(self) -> None:
        """Load the latest version (if any yet) and start watching for new ones."""
        await asyncio.to_thread(set_torch_threads, self.settings)  # imports torch
        await self.holder.refresh()
        if self.holder.current is None:
            log.warning(
                "no usable %s version in the registry yet; cold start only", self.holder.family
            )
        await self.popular.start()
        await self.history.warm()
        if self.holder.current is not None:  # the batch path's first forward, now
            await self.batcher.submit(Query(self.holder.current, [1], 1))
        self.holder.start()

    async def stop(self) -> None:
        await self.holder.stop()
        await self.popular.stop()
        await self.batcher.close()
        await self.history.close()

    async def Recommend(self, request, context):
        return await answer("Recommend", self.recommend, request, context)

    async def recommend(self, request, context) -> recommender_pb2.RecommendResponse:
        serving = self.settings.serving
        check_k(request.k, serving.max_k)
        check_list_size("history", request.history, serving.max_request_history)
        check_list_size("exclude_item_ids", request.exclude_item_ids, serving.max_request_ids)
        check_list_size("candidate_item_ids", request.candidate_item_ids, serving.max_request_ids)
        check_user_or_history(request.user_id, request.history)
        check_deadline(context)
        served = self.holder.current  # this request keeps this version to its end
        if served is None:  # nothing published yet: popular items are all there is
            excluded = await self.excluded(request, list(request.history), context)
            return self.cold_start("", request.k, excluded, ())
        candidates = None
        if request.candidate_item_ids:
            check_known(
                "candidate_item_ids", request.candidate_item_ids, served.index_of, served.version
            )
            candidates = np.array(
                [served.index_of[i] for i in dict.fromkeys(request.candidate_item_ids)]
            )

        history = list(request.history) or await self.history.items(request.user_id, context)
        excluded_ids = await self.excluded(request, history, context)
        known = [served.index_of[i] for i in history if i in served.index_of]
        sequence = known[-served.max_length :]
        if not sequence:
            return self.cold_start(
                served.version, request.k, excluded_ids, request.candidate_item_ids
            )

        query = Query(
            served=served,
            sequence=sequence,
            k=request.k,
            excluded={served.index_of[i] for i in excluded_ids if i in served.index_of},
            candidates=candidates,
        )
        indices, scores = await self.batcher.submit(query)
        return recommender_pb2.RecommendResponse(
            items=[
                recommender_pb2.ScoredItem(item_id=int(served.item_ids[i]), score=float(s))
                for i, s in zip(indices, scores, strict=True)
            ],
            model_version=served.version,
        )

    async def excluded(self, request, history: list[int], context) -> set[int]:
        """The ids left out: the request's, and unless include_seen, every item the user
        has seen (the whole stored history, and the request's history)."""
        excluded = set(request.exclude_item_ids)
        if not request.include_seen:
            excluded.update(history)
            if request.user_id > 0:
                excluded.update(await self.history.seen(request.user_id, context))
        return excluded

    def cold_start(self, version, k, excluded_ids, candidate_ids):
        ranked = self.popular.rank(k, excluded_ids, candidate_ids)
        return recommender_pb2.RecommendResponse(
            items=[recommender_pb2.ScoredItem(item_id=i, score=s) for i, s in ranked],
            model_version=version,
            cold_start=True,
        )


def build_servicer(settings: Settings) -> RecommenderServicer:
    return RecommenderServicer(settings)
