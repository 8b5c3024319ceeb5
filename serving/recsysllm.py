"""RecSysLLMService: the registry's latest `recsysllm` model answering four tasks.

history (request, or ClickHouse through the shared TTL cache) -> the user's
profile and long/medium/short-term titles as a prompt -> NextItems: a
trie-constrained beam search over the catalog titles (every item it returns
exists); RankCandidates and PredictRating: likelihoods of the candidate titles
or the ratings 1-5; Explain: free text whose intra-entity positions come from
the trie. Validation, metrics, auth and hot reload are the serving kit's.
"""

from __future__ import annotations

import asyncio
import random

import torch

from models.recsysllm.artifact import RecSysLLMArtifact
from models.recsysllm.prompts import candidate_segments, templates
from models.recsysllm.tasks import RATINGS, TaskWriter
from models.recsysllm.textualise import UserProfile
from models.recsysllm.training import generate_text
from serving.history_cache import HistoryCache
from serving.holder import ModelHolder, SmokeCheckFailed
from serving.kit import (
    InvalidRequest,
    answer,
    check_deadline,
    check_k,
    check_known,
    check_list_size,
    check_user_or_history,
)
from streamrec.registry import ModelVersion
from streamrec.settings import Settings
from streamrec.v1 import recommender_pb2, recsysllm_pb2, recsysllm_pb2_grpc


def load_served(version: ModelVersion, settings: Settings):
    from streamrec.assets import load_llm

    artifact = RecSysLLMArtifact.from_pretrained(
        version.path, lambda path: load_llm(path, settings)[0]
    )
    artifact.version = version.version
    return artifact


def task_writer(served, settings: Settings) -> TaskWriter:
    config = settings.recsysllm
    return TaskWriter(
        served.tokenizer,
        served.model.marker_ids,
        served.titles,
        config.prompt_items,
        config.windows,
    )


def smoke_check(served, settings: Settings) -> None:
    """Serve a version only if it rates a catalog item with finite scores and writes a
    few explanation tokens (which also runs Explain's cached-step path once, before any
    client's first call)."""
    if not served.titles:
        raise SmokeCheckFailed(f"{served.version} has no items")
    item = next(iter(served.titles))
    writer = task_writer(served, settings)
    context = writer.context(UserProfile(), [item], random.Random(0))
    prompt = writer.prompt(templates("rating", True)[0], context, item=served.titles[item])
    ids, positions = writer.inference_input(prompt)
    answers = [writer.entity_tokens(r) for r in RATINGS]
    scores = served.model.sequence_scores(ids, positions, answers)
    if not torch.isfinite(scores).all():
        raise SmokeCheckFailed(f"{served.version} gives scores that are not finite")
    generate_text(served.model, ids, positions, served.trie.positions, 2)


class RecSysLLMServicer(recsysllm_pb2_grpc.RecSysLLMServiceServicer):
    def __init__(self, settings: Settings, history: HistoryCache | None = None):
        self.settings = settings
        self.holder = ModelHolder(
            settings,
            settings.recsysllm.family,
            lambda v: load_served(v, settings),
            smoke=lambda served: smoke_check(served, settings),
        )
        self.history = history or HistoryCache(settings)
        # One generation at a time: the forward passes already use every core.
        self._model_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.holder.start_optional()
        await self.history.warm()

    async def stop(self) -> None:
        await self.holder.stop()
        await self.history.close()

    async def NextItems(self, request, context):
        return await answer("NextItems", self._next_items, request, context)

    async def RankCandidates(self, request, context):
        return await answer("RankCandidates", self._rank, request, context)

    async def PredictRating(self, request, context):
        return await answer("PredictRating", self._rating, request, context)

    async def Explain(self, request, context):
        return await answer("Explain", self._explain, request, context)

    async def _prompt_context(self, request, context):
        """The served model and the writer, context and history for this request."""
        check_list_size("history", request.history, self.settings.serving.max_request_history)
        check_user_or_history(request.user_id, request.history)
        check_deadline(context)
        served = await self.holder.served(context)
        check_known("history items", request.history, served.titles, served.version)
        history = list(request.history) or await self.history.items(request.user_id, context)
        history = [i for i in history if i in served.titles]
        if not history:
            raise InvalidRequest(f"user {request.user_id} has no history; give a history")
        writer = task_writer(served, self.settings)
        profile = served.profiles.get(request.user_id, UserProfile())
        prompt_context = writer.context(profile, history, random.Random(request.user_id))
        return served, writer, prompt_context, history

    def _check_item(self, served, item_id: int, field: str) -> None:
        if item_id not in served.titles:
            raise InvalidRequest(f"{field} {item_id} is not in the catalog of {served.version}")

    async def _run(self, function, *args):
        async with self._model_lock:
            return await asyncio.to_thread(function, *args)

    async def _next_items(self, request, context):
        config = self.settings.recsysllm
        k = request.k or min(10, config.beams)
        check_k(k, config.beams)
        served, writer, prompt_context, history = await self._prompt_context(request, context)
        ids, positions = writer.inference_input(
            writer.prompt(templates("next_item", True)[0], prompt_context)
        )
        seen_ids = set() if request.include_seen else set(history)
        if not request.include_seen and request.user_id > 0:  # the whole stored history too
            seen_ids.update(await self.history.seen(request.user_id, context))
        seen = {tuple(served.item_tokens[i]) for i in seen_ids if i in served.titles}
        found = await self._run(
            served.model.beam_search_entities, ids, positions, served.trie, k, 32, seen
        )
        items = [served.item_of[tuple(tokens)] for tokens, _ in found]
        return recsysllm_pb2.NextItemsResponse(
            items=[
                recommender_pb2.ScoredItem(item_id=item, score=float(score))
                for item, (_, score) in zip(items, found, strict=True)
            ],
            titles=[served.titles[item] for item in items],
            model_version=served.version,
        )

    async def _rank(self, request, context):
        candidates = list(request.candidate_item_ids)
        if not candidates:
            raise InvalidRequest("candidate_item_ids is empty: give the items to rank")
        check_list_size("candidate_item_ids", candidates, self.settings.recsysllm.max_candidates)
        served, writer, prompt_context, _ = await self._prompt_context(request, context)
        for item in candidates:
            self._check_item(served, item, "candidate item")
        titles = candidate_segments([served.titles[i] for i in candidates])
        ids, positions = writer.inference_input(
            writer.prompt(templates("candidates", True)[0], prompt_context, candidates=titles)
        )
        answers = [served.item_tokens[i] for i in candidates]
        scores = await self._run(served.model.sequence_scores, ids, positions, answers)
        order = torch.argsort(scores, descending=True).tolist()
        return recsysllm_pb2.RankCandidatesResponse(
            items=[
                recommender_pb2.ScoredItem(item_id=candidates[i], score=float(scores[i]))
                for i in order
            ],
            model_version=served.version,
        )

    async def _rating(self, request, context):
        served, writer, prompt_context, _ = await self._prompt_context(request, context)
        self._check_item(served, request.item_id, "item_id")
        ids, positions = writer.inference_input(
            writer.prompt(
                templates("rating", True)[0], prompt_context, item=served.titles[request.item_id]
            )
        )
        answers = [writer.entity_tokens(r) for r in RATINGS]
        scores = await self._run(served.model.sequence_scores, ids, positions, answers)
        expected = float((torch.softmax(scores, 0) * torch.arange(1.0, 6.0)).sum())
        return recsysllm_pb2.PredictRatingResponse(rating=expected, model_version=served.version)

    async def _explain(self, request, context):
        served, writer, prompt_context, _ = await self._prompt_context(request, context)
        self._check_item(served, request.item_id, "item_id")
        ids, positions = writer.inference_input(
            writer.prompt(
                templates("explanation", True)[0],
                prompt_context,
                item=served.titles[request.item_id],
            )
        )
        tokens = await self._run(
            generate_text,
            served.model,
            ids,
            positions,
            served.trie.positions,
            self.settings.recsysllm.explanation_tokens,
        )
        text = served.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return recsysllm_pb2.ExplainResponse(explanation=text, model_version=served.version)


def build_servicer(settings: Settings) -> RecSysLLMServicer:
    return RecSysLLMServicer(settings)
