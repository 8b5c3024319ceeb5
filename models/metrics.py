"""Ranking metrics over 1-based ranks of the target item in a full ranking.

Ranks are computed pessimistically: an item whose score ties the target's, or is
NaN, counts as ranked above it. Comparisons with NaN are false, so a naive
`(scores > target).sum() + 1` would give a model that outputs NaN (or a constant)
rank 1 for every user, a perfect score for a broken model.
"""

from __future__ import annotations

import torch


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of `targets[b]` among `scores[b]` ([B, n_items] -> LongTensor[B])."""
    scores = torch.as_tensor(scores).float()
    targets = torch.as_tensor(targets, device=scores.device).long()
    target_scores = scores.gather(1, targets.unsqueeze(1))
    above = (scores > target_scores) | (scores == target_scores) | torch.isnan(scores)
    above.scatter_(1, targets.unsqueeze(1), False)  # the target does not outrank itself
    ranks = above.sum(dim=1) + 1
    # A NaN target score is ranked last: it carries no evidence of a hit.
    worst = torch.full_like(ranks, scores.shape[1])
    return torch.where(torch.isnan(target_scores.squeeze(1)), worst, ranks)


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
