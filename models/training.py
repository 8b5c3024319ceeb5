"""Training and full-ranking evaluation of sequential recommenders, in plain torch.

Training uses the causal all-positions objective over windows of each user's
training sequence: every position predicts the item after it, so one window of
L+1 items carries L examples (what RecBole gets from L prefix-augmented rows).
Evaluation ranks every item for each example, with the user's earlier items
masked, and early stopping keeps the weights of the best validation NDCG@10.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models.metrics import degenerate_scores, rank_under_protocol, ranking_metrics
from models.sequential.base import SequentialRecommender


@dataclass
class Windows:
    """Training windows: inputs [N, L] (left-aligned, 0-padded), their lengths, and the
    next item after each position [N, L] (0 where there is none)."""

    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.lengths)


def training_windows(sequences: Sequence[np.ndarray], max_length: int, stride: int) -> Windows:
    """Windows of up to max_length + 1 items over each sequence, the last one ending at
    the sequence's end and earlier ones every `stride` items before it. A stride below
    max_length shows some targets again with a longer history."""
    if stride < 1:
        raise ValueError("stride must be at least 1")
    rows = []
    for sequence in sequences:
        sequence = np.asarray(sequence, dtype=np.int64)
        end = len(sequence)
        while end >= 2:
            rows.append(sequence[max(0, end - max_length - 1) : end])
            if end - max_length - 1 <= 0:
                break
            end -= stride
    inputs = torch.zeros(len(rows), max_length, dtype=torch.long)
    targets = torch.zeros(len(rows), max_length, dtype=torch.long)
    lengths = torch.zeros(len(rows), dtype=torch.long)
    for row, window in enumerate(rows):
        window = torch.from_numpy(window)
        inputs[row, : len(window) - 1] = window[:-1]
        targets[row, : len(window) - 1] = window[1:]
        lengths[row] = len(window) - 1
    return Windows(inputs, lengths, targets)


@dataclass
class RankingTask:
    """Examples to rank: histories [N, L], lengths [N], targets [N], and per example the
    items to mask (the user's earlier items; the target itself is never masked)."""

    histories: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    masked: Sequence[Sequence[int]]

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, rows: Sequence[int]) -> RankingTask:
        """The examples at `rows`, in that order."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return RankingTask(
            self.histories[index],
            self.lengths[index],
            self.targets[index],
            [self.masked[int(row)] for row in index],
        )


@torch.no_grad()
def screened_ranks(
    model: SequentialRecommender, task: RankingTask, batch_size: int = 512
) -> tuple[torch.Tensor, str | None]:
    """Ranks of the targets under the protocol (`rank_under_protocol`), and why the
    model's scores show it broken (`degenerate_scores` of any batch), else None."""
    model.eval()
    device = next(model.parameters()).device
    ranks, problem = [], None
    for start in range(0, len(task), batch_size):
        stop = min(start + batch_size, len(task))
        scores = model.full_scores(
            task.histories[start:stop].to(device), task.lengths[start:stop].to(device)
        )
        problem = problem or degenerate_scores(scores)
        targets = task.targets[start:stop]
        ranks.append(rank_under_protocol(scores, targets, task.masked[start:stop]).cpu())
    return (torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)), problem


def rank_targets(
    model: SequentialRecommender, task: RankingTask, batch_size: int = 512
) -> torch.Tensor:
    """1-based rank of each target among all items (padding and masked items excluded)."""
    return screened_ranks(model, task, batch_size)[0]


def evaluate(model: SequentialRecommender, task: RankingTask, batch_size: int = 512) -> dict:
    """HR@{5,10,20}, NDCG@{5,10,20}, MRR@10 of a full ranking."""
    return ranking_metrics(rank_targets(model, task, batch_size))


@dataclass
class FitConfig:
    epochs: int = 200
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    # Epochs without a better validation NDCG@10 before stopping.
    patience: int = 10
    eval_every: int = 1
    # Wall-clock cap in seconds (0: none); the best epoch so far is kept.
    max_seconds: float = 0.0
    stop_metric: str = "ndcg@10"


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict
    epochs_run: int
    seconds: float
    stopped_by: str  # "patience", "epochs" or "time"
    history: list[dict] = field(default_factory=list)


def fit(
    model: SequentialRecommender,
    windows: Windows,
    valid: RankingTask,
    config: FitConfig,
    seed: int = 0,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Adam over shuffled windows; the model ends with its best validation weights."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    started = time.monotonic()
    best_score, best_epoch, best_state, best_valid = -math.inf, 0, None, {}
    history, stopped_by, epoch = [], "epochs", 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(windows), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(
                windows.inputs[index].to(device),
                windows.lengths[index].to(device),
                windows.targets[index].to(device),
            )
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        record = {"epoch": epoch, "loss": total / max(batches, 1)}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            metrics = evaluate(model, valid)
            record["valid"] = metrics
            if metrics[config.stop_metric] > best_score:
                best_score, best_epoch, best_valid = metrics[config.stop_metric], epoch, metrics
                best_state = copy.deepcopy(model.state_dict())
        record["seconds"] = time.monotonic() - started
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if epoch - best_epoch >= config.patience:
            stopped_by = "patience"
            break
        if config.max_seconds and record["seconds"] >= config.max_seconds:
            stopped_by = "time"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, best_valid, epoch, time.monotonic() - started, stopped_by, history)
