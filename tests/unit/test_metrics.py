"""Ranking metrics against hand-computed values, and NaN-safe ranks."""

from __future__ import annotations

import math

import pytest
import torch

from models.metrics import hit_rate, mrr, ndcg, ranking_metrics, ranks_from_scores


def test_metrics_match_hand_computed_values():
    ranks = torch.tensor([1, 3, 7, 12, 30])
    assert hit_rate(ranks, 5) == pytest.approx(2 / 5)
    assert hit_rate(ranks, 10) == pytest.approx(3 / 5)
    assert hit_rate(ranks, 20) == pytest.approx(4 / 5)
    assert ndcg(ranks, 5) == pytest.approx((1 / math.log2(2) + 1 / math.log2(4)) / 5)
    assert ndcg(ranks, 10) == pytest.approx((1 + 0.5 + 1 / math.log2(8)) / 5)
    assert mrr(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 7) / 5)
    metrics = ranking_metrics(ranks)
    assert set(metrics) == {"hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10"}
    assert metrics["ndcg@20"] == pytest.approx((1 + 0.5 + 1 / math.log2(8) + 1 / math.log2(13)) / 5)


def test_ranks_from_scores():
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.5], [0.0, 0.2, 0.3, 0.1]])
    assert ranks_from_scores(scores, torch.tensor([3, 1])).tolist() == [2, 2]
    assert ranks_from_scores(scores, torch.tensor([1, 3])).tolist() == [1, 3]


def test_nan_and_ties_never_count_as_hits():
    nan_target = torch.tensor([[0.0, float("nan"), 0.1, 0.2]])
    assert ranks_from_scores(nan_target, torch.tensor([1])).item() == 4
    nan_others = torch.tensor([[0.0, 0.5, float("nan"), float("nan")]])
    assert ranks_from_scores(nan_others, torch.tensor([1])).item() == 3
    constant = torch.zeros(1, 5)  # a dead model scores every item alike
    assert ranks_from_scores(constant, torch.tensor([2])).item() == 5
    masked = torch.tensor([[float("-inf"), 1.0, float("-inf")]])
    assert ranks_from_scores(masked, torch.tensor([1])).item() == 1
