"""Ranking metrics against hand-computed values, NaN-safe ranks, the protocol mask, and the
ranks of generated lists."""

from __future__ import annotations

import math

import pytest
import torch

from models.metrics import (
    degenerate_scores,
    hit_rate,
    mrr,
    ndcg,
    rank_under_protocol,
    ranking_metrics,
    ranks_from_scores,
    ranks_in_lists,
)


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


def test_the_protocol_masks_padding_and_every_earlier_item_but_never_the_target():
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0]] * 3)
    targets = torch.tensor([5, 5, 2])
    # Row 0 masks nothing but padding; row 1 masks items 1-3, row 2 its own target too.
    ranks = rank_under_protocol(scores, targets, [[], [1, 2, 3], [1, 2]])
    assert ranks.tolist() == [5, 2, 1]
    # Masked items never count, even when they tie the target or are NaN.
    tied = torch.tensor([[0.0, 1.0, 1.0, float("nan"), 2.0]])
    assert rank_under_protocol(tied, torch.tensor([1]), [[2, 3]]).item() == 2


def test_a_broken_model_ranks_last_under_the_protocol():
    masked, targets = [[1, 2]] * 2, torch.tensor([3, 4])
    nan = torch.full((2, 40), float("nan"))
    # 39 real items, 2 masked: the target ranks 37th of 37, a miss at every cut-off.
    assert rank_under_protocol(nan, targets, masked).tolist() == [37, 37]
    constant = torch.ones(2, 40)
    assert rank_under_protocol(constant, targets, masked).tolist() == [37, 37]
    assert ranking_metrics(rank_under_protocol(constant, targets, masked)) == dict.fromkeys(
        ranking_metrics([1]), 0.0
    )
    assert degenerate_scores(nan) == "non-finite scores"
    assert degenerate_scores(constant) == "constant scores"
    # Padding's score does not make a model look alive; one varying row does.
    padding_varies = torch.tensor([[5.0, 1.0, 1.0], [-1.0, 2.0, 2.0]])
    assert degenerate_scores(padding_varies) == "constant scores"
    assert degenerate_scores(torch.tensor([[0.0, 1.0, 1.0], [0.0, 2.0, 3.0]])) is None


def test_ranks_in_generated_lists():
    lists = [[4, 2, 7], [None, 5, 5], [1, 2, 3], []]
    ranks = ranks_in_lists(lists, [7, 5, 9, 1])
    assert ranks.tolist() == [3, 2, math.inf, math.inf]
    assert ranking_metrics(ranks)["hr@20"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ranks_in_lists(lists, [1])
