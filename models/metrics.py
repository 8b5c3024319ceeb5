"""The one ranking of every evaluator, and the metrics over its 1-based ranks.

Ranks are computed pessimistically: an item whose score ties the target's, or is
NaN, counts as ranked above it. Comparisons with NaN are false, so a naive
`(scores > target).sum() + 1` would give a model that outputs NaN (or a constant)
rank 1 for every user, a perfect score for a broken model.

The protocol (RecBole's, the README's tables): every item is ranked except
padding (id 0) and the user's earlier items; the target itself is never masked.
Models that score every item go through `rank_under_protocol`; models that
generate a top-k list (GenRec, RecSysLLM) go through `ranks_in_lists`, and both
give ranks to the same `ranking_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor | None = None
) -> torch.Tensor:
    """1-based rank of `targets[b]` among `scores[b]` ([B, n_items] -> LongTensor[B]);
    `excluded` [B, n_items] marks items that are not ranked at all (never the target)."""
    scores = torch.as_tensor(scores).float()
    targets = torch.as_tensor(targets, device=scores.device).long()
    target_scores = scores.gather(1, targets.unsqueeze(1))
    above = (scores >= target_scores) | torch.isnan(scores)
    above.scatter_(1, targets.unsqueeze(1), False)  # the target does not outrank itself
    if excluded is None:
        worst = torch.full((len(scores),), scores.shape[1], device=scores.device)
    else:
        above &= ~excluded
        worst = (~excluded).sum(dim=1)
    ranks = above.sum(dim=1) + 1
    # A NaN target score is ranked last: it carries no evidence of a hit.
    return torch.where(torch.isnan(target_scores.squeeze(1)), worst, ranks)


def rank_under_protocol(
    scores: torch.Tensor, targets: torch.Tensor, masked_items: Sequence[Iterable[int]]
) -> torch.Tensor:
    """Ranks of the targets among all items, padding and `masked_items[b]` (the user's
    earlier items) excluded; a target among its own earlier items is still ranked."""
    scores = torch.as_tensor(scores).float()
    targets = torch.as_tensor(targets, device=scores.device).long()
    masked = [
        np.asarray(items if isinstance(items, np.ndarray | list | tuple) else list(items))
        .astype(np.int64)
        .ravel()
        for items in masked_items
    ]
    if len(masked) != len(scores):
        raise ValueError(f"{len(masked)} masked item lists for {len(scores)} score rows")
    rows = np.repeat(np.arange(len(masked)), [len(items) for items in masked])
    columns = np.concatenate(masked) if masked else np.zeros(0, dtype=np.int64)
    excluded = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    index = torch.from_numpy(np.stack([rows, columns])).to(scores.device)
    excluded[index[0], index[1]] = True
    excluded[:, 0] = True
    excluded.scatter_(1, targets.unsqueeze(1), False)
    return ranks_from_scores(scores, targets, excluded)


def ranks_in_lists(lists: Sequence[Sequence], targets: Sequence[int]) -> torch.Tensor:
    """1-based position of each target in its generated top-k list (the first time it
    appears); a target the list lacks ranks past every position (infinity), a miss at
    every cut-off. A list shorter than a cut-off can only under-count there, so list
    evaluators generate `max(CUTOFFS)` items."""
    if len(lists) != len(targets):
        raise ValueError(f"{len(lists)} lists for {len(targets)} targets")
    ranks = [
        list(items).index(target) + 1 if target in items else math.inf
        for items, target in zip(lists, (int(t) for t in targets), strict=True)
    ]
    return torch.tensor(ranks, dtype=torch.float64)


def degenerate_scores(scores: torch.Tensor) -> str | None:
    """Why scores [B, n_items] show a broken model (NaN or infinite scores, or every
    row constant over the real items), else None: a gate must refuse such a model
    whatever its ranks say."""
    real = torch.as_tensor(scores).float()[:, 1:]
    if not bool(torch.isfinite(real).all()):
        return "non-finite scores"
    if len(real) and bool((real.amax(dim=1) == real.amin(dim=1)).all()):
        return "constant scores"
    return None


def _ranks(ranks) -> torch.Tensor:
    return torch.as_tensor(ranks).double().flatten()


def hit_rate(ranks, k: int) -> float:
    """Share of users whose target is in the top k."""
    ranks = _ranks(ranks)
    return float((ranks <= k).double().mean()) if len(ranks) else 0.0


def ndcg(ranks, k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 1) inside the top k, else 0."""
    ranks = _ranks(ranks)
    if not len(ranks):
        return 0.0
    gains = torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1), torch.zeros_like(ranks))
    return float(gains.mean())


def mrr(ranks, k: int) -> float:
    """MRR@k: 1 / rank inside the top k, else 0."""
    ranks = _ranks(ranks)
    if not len(ranks):
        return 0.0
    return float(torch.where(ranks <= k, 1.0 / ranks, torch.zeros_like(ranks)).mean())


CUTOFFS = (5, 10, 20)
MRR_CUTOFF = 10


def ranking_metrics(ranks) -> dict[str, float]:
    """HR and NDCG at 5/10/20 and MRR@10, the protocol's figures."""
    metrics = {}
    for k in CUTOFFS:
        metrics[f"hr@{k}"] = hit_rate(ranks, k)
        metrics[f"ndcg@{k}"] = ndcg(ranks, k)
    metrics[f"mrr@{MRR_CUTOFF}"] = mrr(ranks, MRR_CUTOFF)
    return metrics
