"""GenRec training and evaluation on a dataset's leave-one-out splits.

Two phases, both with AdamW and a linear warm-up then decay:

- pretraining (masked item prediction): a window of a user's training
  sequence with one random item replaced by the mask, the model spells that
  item. The training sequence never holds the user's last two items (the
  valid and test targets), so neither is ever seen;
- fine-tuning: the mask appended after a history (the paper's figure 2),
  the model spells the next item, over the same train examples the ID
  recommenders learn from, until validation NDCG@10 stops improving (the
  recommenders' early stopping; the best epoch's weights are kept).

Evaluation is the recommenders' protocol with the generated top-k list as
the ranking: the beams never spell one of the user's earlier items (the
items a full ranking masks), and a target missing from the list ranks past k
(`models.metrics.ranks_in_lists`, the same figures as every other family).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from models.device import resolve_device
from models.genrec import GenRec
from models.metrics import ranking_metrics, ranks_in_lists
from streamrec.datasets import Dataset, Split
from workers.recommender_training import EPOCH, VALID_NDCG, protocol_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training row: the mask replaces `history[mask_at]`, or follows it when None."""

    user: int
    history: tuple[int, ...]
    mask_at: int | None
    target: int


def training_sequences(train: Split) -> dict[int, list[int]]:
    """Each user's items before their valid and test targets, in time order."""
    return train.user_sequences()


def pretraining_examples(
    sequences: dict[int, list[int]], masks_per_user: int, max_history: int, rng: random.Random
) -> list[Example]:
    """Masked copies of each user's training sequence: a random window, one item masked."""
    examples = []
    for user, sequence in sequences.items():
        if len(sequence) < 2:
            continue
        width = min(len(sequence), max_history)
        for _ in range(masks_per_user):
            start = rng.randrange(len(sequence) - width + 1)
            window = tuple(sequence[start : start + width])
            mask_at = rng.randrange(width)
            examples.append(Example(user, window, mask_at, window[mask_at]))
    return examples


def next_item_examples(split: Split, max_history: int) -> list[Example]:
    """History -> next item rows of a split, the mask appended after the last items."""
    return [
        Example(user, tuple(history[max(0, length - max_history) : length].tolist()), None, target)
        for user, history, length, target in split.rows()
    ]


def evaluation_examples(
    dataset: Dataset, split: str, max_history: int
) -> tuple[list[Example], list[np.ndarray]]:
    """A split's next-item examples and, for each, the items the protocol masks: all of the
    user's items before the target (training sequence, and the valid item for test)."""
    data = protocol_data(dataset)
    task = {"valid": data.valid, "test": data.test}[split]
    return next_item_examples(dataset.splits[split], max_history), task.masked


def train_phase(
    model: GenRec,
    examples: list[Example],
    epochs: int,
    settings,
    description: str,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
    validate: Callable[[GenRec], float] | None = None,
) -> dict:
    """Train on `examples` for `epochs` (or `settings.max_steps` steps); returns a summary.

    With `validate` (a score, higher is better) the phase scores the model after every
    epoch, stops once `settings.patience` epochs in a row did not beat the best, and
    ends on the best epoch's weights: the recommenders' early stopping.
    """
    batch_size = settings.batch_size
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total = steps_per_epoch * epochs
    if settings.max_steps:
        total = min(total, settings.max_steps)
    if total == 0:
        return {"steps": 0, "examples": len(examples), "loss": None}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    warmup = int(total * settings.warmup_ratio)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
    rng = random.Random(seed)
    order = list(range(len(examples)))
    step, epoch, running = 0, 0, None
    scores: list[float] = []
    best_state: dict | None = None
    with tqdm(total=total, desc=description, unit="step", leave=False) as bar:
        while step < total:
            model.train()
            rng.shuffle(order)
            for start in range(0, len(order), batch_size):
                if step >= total:
                    break
                rows = [examples[i] for i in order[start : start + batch_size]]
                batch = model.encode(
                    [r.user for r in rows],
                    [list(r.history) for r in rows],
                    [r.mask_at for r in rows],
                )
                loss = model.loss(batch, [r.target for r in rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                value = float(loss.detach())
                running = value if running is None else 0.95 * running + 0.05 * value
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}")
                if on_step:
                    on_step(len(rows), value)
            epoch += 1
            if validate is None:
                continue
            model.eval()
            scores.append(validate(model))
            log.info("%s epoch %d: loss %.4f, valid %.4f", description, epoch, running, scores[-1])
            if scores[-1] == max(scores):
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif len(scores) - 1 - scores.index(max(scores)) >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    summary = {"steps": step, "epochs_run": epoch, "examples": len(examples), "loss": running}
    if scores:
        summary |= {"best_epoch": scores.index(max(scores)) + 1, "valid": scores}
    return summary


def evaluate(
    model: GenRec,
    examples: list[Example],
    settings,
    k: int = 20,
    masked: Sequence[Collection[int]] | None = None,
) -> dict:
    """Generate the top-k list per example and score the target's rank in it; `masked[i]`
    holds the items example i must not generate (`evaluation_examples` gives the protocol's).

    `valid_item_rate` is measured, not assumed: the share of generated items that
    are catalog items and appear once in their list.
    """
    if settings.max_eval_examples:
        examples = examples[: settings.max_eval_examples]
    model.eval()
    lists = []
    generated = valid = 0
    batch_size = settings.eval_batch_size
    for start in tqdm(range(0, len(examples), batch_size), desc="generate", leave=False):
        rows = examples[start : start + batch_size]
        batch = model.encode([r.user for r in rows], [list(r.history) for r in rows])
        banned = None
        if masked is not None:
            banned = [{int(i) for i in masked[start + n]} for n in range(len(rows))]
        results = model.generate(batch, k, settings.beam_size, banned)
        for result in results:
            generated += len(result.items)
            valid += len(
                {i for i in result.items if i is not None and 0 < i < model.config.n_items}
            )
            lists.append(result.items)
    return {
        **ranking_metrics(ranks_in_lists(lists, [example.target for example in examples])),
        "valid_item_rate": valid / generated if generated else 0.0,
        "examples": len(examples),
    }


def item_and_user_ids(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """External (wire) id per model index; index 0 is padding and holds 0."""
    items = np.zeros(dataset.num_items + 1, dtype=np.int64)
    for inner, item in dataset.items.items():
        items[inner] = item.external_id
    users = np.zeros(dataset.num_users + 1, dtype=np.int64)
    for inner, user in dataset.users.items():
        users[inner] = user.external_id
    return items, users


def train_genrec(
    dataset: Dataset,
    settings,
    pretrain: bool = True,
    seed: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[GenRec, dict]:
    """A GenRec model trained on `dataset` (pretraining optional), and what was done."""
    seed = settings.seed if seed is None else seed
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = GenRec.from_settings(settings, dataset.num_items + 1, dataset.num_users + 1)
    model.to(resolve_device(settings.device))
    summary = {"seed": seed, "pretrain": pretrain}
    if pretrain:
        sequences = training_sequences(dataset.splits["train"])
        examples = pretraining_examples(
            sequences, settings.pretrain_masks_per_user, settings.max_history, rng
        )
        summary["pretraining"] = train_phase(
            model, examples, settings.pretrain_epochs, settings, "pretrain", seed, on_step
        )
    examples = next_item_examples(dataset.splits["train"], settings.max_history)
    valid, masked = evaluation_examples(dataset, "valid", settings.max_history)
    valid_settings = settings.model_copy(update={"max_eval_examples": 0})

    scores: list[float] = []

    def valid_ndcg(trained: GenRec) -> float:
        scores.append(
            evaluate(trained, valid, valid_settings, settings.default_k, masked)["ndcg@10"]
        )
        EPOCH.labels("genrec").set(len(scores))
        VALID_NDCG.labels("genrec").set(scores[-1])
        return scores[-1]

    summary["fine_tuning"] = train_phase(
        model,
        examples,
        settings.finetune_epochs,
        settings,
        "fine-tune",
        seed + 1,
        on_step,
        validate=valid_ndcg if settings.patience else None,
    )
    return model, summary


def run_training_job(
    settings,
    dataset_name: str,
    pretrain: bool = True,
    publish: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """`streamrec genrec train`: train, evaluate on valid and test, save, publish `genrec`."""
    import tempfile
    import time
    from pathlib import Path

    from streamrec.datasets import load_dataset
    from streamrec.registry import VersionMetadata, publish

    chosen = settings.genrec
    dataset = load_dataset(dataset_name, settings)
    started = time.perf_counter()
    model, summary = train_genrec(dataset, chosen, pretrain=pretrain, on_step=on_step)
    summary["train_seconds"] = round(time.perf_counter() - started, 1)
    metrics = {}
    for split in ("valid", "test"):
        examples, masked = evaluation_examples(dataset, split, chosen.max_history)
        metrics[split] = evaluate(model, examples, chosen, chosen.default_k, masked)
    result = {"dataset": dataset_name, "model": "genrec", "summary": summary, "metrics": metrics}
    if publish:
        item_ids, user_ids = item_and_user_ids(dataset)
        with tempfile.TemporaryDirectory() as scratch:
            folder = model.save_pretrained(
                Path(scratch) / "genrec",
                item_ids,
                user_ids,
                {"dataset": dataset_name, "pretrain": pretrain},
            )
            version = publish(
                settings,
                chosen.family,
                folder,
                VersionMetadata(
                    metrics=metrics["test"],
                    extra={"dataset": dataset_name, "pretrain": pretrain},
                ),
            )
        result["version"] = version.version
    return result
