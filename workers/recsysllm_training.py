"""RecSysLLM training and evaluation on a dataset, and publication to the registry.

Each user's chronological history is split leave-one-out (the last item is the
test target, the one before it validation, the rest training), as for the ID
recommenders; training writes one example per task per user plus one
entity-aware masked behaviour text.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from models.metrics import CUTOFFS, hit_rate, ranking_metrics, ranks_from_scores, ranks_in_lists
from models.recsysllm.artifact import RecSysLLMArtifact
from models.recsysllm.configuration_recsysllm import RecSysLLMConfig
from models.recsysllm.modeling_recsysllm import RecSysLLM, add_marker_tokens
from models.recsysllm.prompts import candidate_segments, templates
from models.recsysllm.tasks import RATINGS, TaskWriter, UserHistory
from models.recsysllm.textualise import UserProfile
from models.recsysllm.training import generate_text, train
from streamrec.registry import VersionMetadata, publish
from streamrec.settings import Settings


@dataclass
class RecSysLLMData:
    titles: dict[int, str]  # external item id -> title with year
    histories: dict[int, UserHistory]  # external user id -> chronological history


def dataset_data(dataset) -> RecSysLLMData:
    titles = {
        item.external_id: f"{item.title} ({item.year})" if item.year else item.title
        for item in dataset.items.values()
    }
    histories: dict[int, UserHistory] = {}
    for user, item, rating in zip(
        dataset.user_ids.tolist(), dataset.item_ids.tolist(), dataset.ratings.tolist(), strict=True
    ):
        record = dataset.users[user]
        history = histories.setdefault(
            record.external_id,
            UserHistory(UserProfile(record.age, record.gender, record.occupation), [], []),
        )
        history.items.append(dataset.items[item].external_id)
        history.ratings.append(None if math.isnan(rating) else float(rating))
        history.reviews.append(dataset.reviews.get((user, item)))
    return RecSysLLMData(titles, histories)


def until(history: UserHistory, drop_last: int) -> UserHistory:
    end = len(history.items) - drop_last
    return UserHistory(
        history.profile, history.items[:end], history.ratings[:end], history.reviews[:end]
    )


def load_base(path: str):
    from streamrec.assets import load_llm

    return load_llm(path or None)


def build_model(settings: Settings, **variant):
    """The base LLM with markers and LoRA, and its tokenizer; `variant` switches
    parts of RecSysLLMConfig off (the SFT baseline)."""
    config = settings.recsysllm
    llm, tokenizer = load_base(config.llm_path)
    markers = add_marker_tokens(tokenizer, llm)
    model_config = RecSysLLMConfig(
        lora_rank=config.lora_rank, windows=list(config.windows), **variant
    )
    return RecSysLLM.for_training(llm, model_config, markers), tokenizer


def writer_for(settings: Settings, tokenizer, model: RecSysLLM, titles) -> TaskWriter:
    config = settings.recsysllm
    return TaskWriter(
        tokenizer,
        model.marker_ids,
        titles,
        config.prompt_items,
        config.windows,
        config.explanation_tokens,
    )


def train_recsysllm(
    settings: Settings, data: RecSysLLMData, users: list[int], **variant
) -> RecSysLLMArtifact:
    config = settings.recsysllm
    model, tokenizer = build_model(settings, **variant)
    writer = writer_for(settings, tokenizer, model, data.titles)
    rng = random.Random(config.seed)
    catalog = sorted(data.titles)
    examples = []
    for user in users:
        examples += writer.training_examples(
            until(data.histories[user], 2),
            rng,
            config.candidates,
            catalog,
            masked_text=model.config.masked_texts,
        )
    with Progress() as progress:
        task = progress.add_task("RecSysLLM training", total=config.steps)
        train(
            model,
            examples,
            steps=config.steps,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            seed=config.seed,
            progress=lambda step, loss: progress.update(
                task, advance=1, description=f"RecSysLLM training (loss {loss:.3f})"
            ),
        )
    profiles = {user: data.histories[user].profile for user in data.histories}
    base = ""  # full weights need no base
    if config.lora_rank:
        base = config.llm_path or str(_default_llm_path(settings))
    return RecSysLLMArtifact(model, tokenizer, data.titles, profiles, base)


def _default_llm_path(settings: Settings) -> Path:
    from streamrec.assets import fetch_assets

    return fetch_assets(settings).llm


def _next_items(artifact, ids, positions, seen_items, constrained: bool):
    """The model's next items for one prompt and whether all of them are catalog items:
    trie-constrained beams, or one free greedy text, as a plainly fine-tuned LLM answers."""
    model = artifact.model
    if constrained:
        found = model.beam_search_entities(
            ids, positions, artifact.trie, max(CUTOFFS), exclude=seen_items
        )
        items = [artifact.item_of[tuple(tokens)] for tokens, _ in found]
        return items, float(all(tuple(t) in artifact.trie for t, _ in found))
    tokens = generate_text(model, ids, positions, lambda g: [0] * len(g), 32)
    items = [artifact.item_of[tuple(tokens)]] if tuple(tokens) in artifact.item_of else []
    return items, float(bool(items))


@torch.no_grad()
def evaluate(
    settings: Settings,
    artifact: RecSysLLMArtifact,
    data: RecSysLLMData,
    users: list[int],
    constrained: bool = True,
    tasks: tuple[str, ...] = ("next_item", "candidates", "rating"),
) -> dict[str, dict[str, float]]:
    """Metrics per task and prompt set ("next_item/seen", "rating/unseen", ...), each with
    the users it counted; `constrained` False decodes next items as free text (no trie).
    `tasks` leaves some out: candidate ranking alone is cheap enough for many users.

    Next items are a top-20 list that never holds one of the user's earlier items
    (the protocol's mask, `ranks_in_lists`); candidates are ranked by their scores
    (`ranks_from_scores`: ties and NaN pessimistic); both get every family's figures."""
    config = settings.recsysllm
    model, tokenizer = artifact.model.eval(), artifact.tokenizer
    writer = writer_for(settings, tokenizer, model, data.titles)
    rng = random.Random(config.seed + 1)
    catalog = sorted(data.titles)
    rating_tokens = [writer.entity_tokens(r) for r in RATINGS]
    results: dict[str, dict[str, list[float]]] = {}

    def record(key: str, **values: float) -> None:
        for name, value in values.items():
            results.setdefault(key, {}).setdefault(name, []).append(value)

    for user in users:
        history = until(data.histories[user], 0)
        *earlier, target = history.items
        context = writer.context(history.profile, earlier, rng)
        seen_items = {
            tuple(artifact.item_tokens[i])
            for i in earlier
            if i != target and i in artifact.item_tokens
        }
        negatives = [i for i in rng.sample(catalog, 4 * config.candidates) if i not in earlier]
        pool = negatives[: config.candidates - 1] + [target]
        rng.shuffle(pool)
        for seen in (True, False):
            label = "seen" if seen else "unseen"
            if "next_item" in tasks:
                prompt = writer.prompt(templates("next_item", seen)[0], context)
                ids, positions = writer.inference_input(prompt)
                items, valid = _next_items(artifact, ids, positions, seen_items, constrained)
                rank = float(ranks_in_lists([items], [target])[0])
                record(f"next_item/{label}", rank=rank, valid=valid)
            if "candidates" in tasks:
                prompt = writer.prompt(
                    templates("candidates", seen)[0],
                    context,
                    candidates=candidate_segments([data.titles[i] for i in pool]),
                )
                ids, positions = writer.inference_input(prompt)
                items = [artifact.item_tokens[i] for i in pool]
                scores = model.sequence_scores(ids, positions, items)
                rank = int(ranks_from_scores(scores.unsqueeze(0), [pool.index(target)])[0])
                record(f"candidates/{label}", rank=rank, valid=1.0)
            if "rating" in tasks and history.ratings[-1] is not None:
                prompt = writer.prompt(
                    templates("rating", seen)[0], context, item=data.titles[target]
                )
                ids, positions = writer.inference_input(prompt)
                scores = model.sequence_scores(ids, positions, rating_tokens)
                expected = float((torch.softmax(scores, 0) * torch.arange(1.0, 6.0)).sum())
                record(f"rating/{label}", error=expected - history.ratings[-1])
    metrics = {}
    for key, values in results.items():
        if "rank" in values:
            metrics[key] = {"hr@1": hit_rate(values["rank"], 1), **ranking_metrics(values["rank"])}
            metrics[key]["valid_item_rate"] = float(np.mean(values["valid"]))
        else:
            errors = np.array(values["error"])
            metrics[key] = {
                "rmse": float(np.sqrt((errors**2).mean())),
                "mae": float(np.abs(errors).mean()),
            }
        metrics[key]["users"] = len(next(iter(values.values())))
    return metrics


def sample_users(data: RecSysLLMData, count: int, seed: int) -> list[int]:
    users = sorted(data.histories)
    return sorted(random.Random(seed).sample(users, min(count, len(users))))


def publish_artifact(settings: Settings, artifact: RecSysLLMArtifact, metadata: VersionMetadata):
    """The artifact saved and published as the next `recsysllm.family` version."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = artifact.save_pretrained(Path(scratch) / "recsysllm")
        return publish(settings, settings.recsysllm.family, folder, metadata)


def run_training_job(
    settings: Settings,
    dataset_name: str,
    eval_users: int = 20,
    publish_version: bool = True,
    on_trained: Callable[[int], None] | None = None,
) -> dict:
    """`streamrec recsysllm train`: train on sampled users, evaluate held-out ones, publish.

    `on_trained` hears how many users were trained on. Returns the metrics, and the
    published version's name when one was published.
    """
    from streamrec.datasets import load_dataset

    config = settings.recsysllm
    data = dataset_data(load_dataset(dataset_name, settings))
    chosen = sample_users(data, config.train_users, config.seed)
    artifact = train_recsysllm(settings, data, chosen)
    if on_trained is not None:
        on_trained(len(chosen))
    held_out = sample_users(data, eval_users, config.seed + 7)
    metrics = evaluate(settings, artifact, data, held_out)
    result = {"dataset": dataset_name, "metrics": metrics}
    if publish_version:
        version = publish_artifact(
            settings, artifact, VersionMetadata(metrics=metrics, extra={"dataset": dataset_name})
        )
        result["published"] = f"{version.family}/{version.version}"
    return result
