"""The online trainer's gate: a candidate is published only when its held-out figures
say it is sane and no worse than the version it would replace."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.metrics import ndcg
from models.training import RankingTask, screened_ranks
from workers.trainer_examples import Example, to_tensors

CUTOFF = 10


@dataclass
class Decision:
    published: bool
    version: str | None
    metrics: dict
    # Set when another job published first: the cycle's candidate was dropped for that version.
    rebased_on: str | None = None
    # Why the candidate was rejected (NaN or constant scores, or a regression).
    reason: str | None = None


def heldout_ndcg(
    model: torch.nn.Module, examples: list[Example], max_len: int
) -> tuple[float, str | None]:
    """NDCG@10 of `examples` under the protocol (every item ranked, padding and the items of
    each example's history masked, ties and NaN pessimistic), and why the model must not be
    published whatever its ranks say (NaN or constant scores), else None."""
    if not examples:
        return 0.0, None
    histories, lengths, targets = to_tensors(examples, max_len, "cpu")
    task = RankingTask(histories, lengths, targets, [example.history for example in examples])
    ranks, problem = screened_ranks(model, task, batch_size=256)
    model.train()
    return ndcg(ranks, CUTOFF), problem


def rejection(candidate: float, published: float, problem: str | None, tolerance: float):
    """Why the candidate must not be published (None when it may): NaN or constant scores,
    or a held-out NDCG@10 more than `tolerance` below the published model's."""
    if problem:
        return f"candidate rejected: {problem} on the held-out examples"
    if candidate < published - tolerance:
        return (
            f"candidate rejected: held-out NDCG@10 {candidate:.4f} below the "
            f"published {published:.4f} minus the tolerance {tolerance}"
        )
    return None
