"""Ranking metrics against hand-computed values, NaN-safe ranks, the protocol mask, the
ranks of generated lists, and the same figures from every family's evaluator."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.genrec.modeling_genrec import Generated
from models.metrics import (
    CUTOFFS,
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


N_ITEMS = 40


class TableRecommender(torch.nn.Module):
    """Scores every item by a learnable table row chosen by the last history item; as a
    generator, the top-k of that row without the banned items (GenRec's beams do that)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.rand(N_ITEMS, N_ITEMS, generator=generator))
        self.config = SimpleNamespace(n_items=N_ITEMS)

    def full_scores(self, item_seq, item_seq_len):
        last = item_seq.gather(1, (item_seq_len - 1).unsqueeze(1)).squeeze(1)
        return self.table[last]

    def encode(self, users, histories):
        return histories

    def generate(self, histories, k, beam_size, banned):
        results = []
        for history, ban in zip(histories, banned, strict=True):
            order = torch.argsort(self.table[history[-1]], descending=True).tolist()
            results.append(Generated(items=[i for i in order if i and i not in ban][:k]))
        return results


def known_examples(count: int = 60, seed: int = 1):
    """Histories of 1-6 distinct items and targets, some among their own history."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        history = rng.choice(np.arange(1, N_ITEMS), int(rng.integers(1, 7)), replace=False)
        target = int(history[0]) if rng.random() < 0.2 else int(rng.integers(1, N_ITEMS))
        examples.append((history.tolist(), target))
    return examples


def test_every_family_gives_the_same_figures_for_the_same_ranks():
    from models.training import RankingTask
    from models.training import evaluate as sequential_evaluate
    from streamrec.settings import GenRecSettings
    from workers import genrec_training, trainer_examples, trainer_gate
    from workers.alignment.job import evaluate as alignment_evaluate

    model, examples = TableRecommender(), known_examples()
    # Models read a window of 3 items; the protocol masks the whole history.
    histories, lengths, targets = trainer_examples.to_tensors(
        [trainer_examples.Example(history, target) for history, target in examples], 3, "cpu"
    )
    masked = [[i for i in history if i != target] for history, target in examples]
    task = RankingTask(histories, lengths, targets, masked)

    sequential = sequential_evaluate(model, task)
    assert 0.2 < sequential["hr@20"] < 0.9 and sequential["ndcg@10"] > 0  # hits and misses
    assert alignment_evaluate(model, task) == sequential
    held_out = [trainer_examples.Example(history, target) for history, target in examples]
    assert trainer_gate.heldout_ndcg(model, held_out, 3) == (sequential["ndcg@10"], None)
    genrec = genrec_training.evaluate(
        model,
        [genrec_training.Example(0, tuple(history), None, t) for history, t in examples],
        GenRecSettings(eval_batch_size=16, max_eval_examples=0),
        k=max(CUTOFFS),
        masked=masked,
    )
    assert genrec.pop("examples") == len(examples) and genrec.pop("valid_item_rate") == 1.0
    assert genrec == sequential
    # RecSysLLM's two paths, one user at a time: the rank in its top-20 list of next
    # items (`ranks_in_lists`), and the rank of the target by its score in a pool
    # (`ranks_from_scores`), here a pool of every item the protocol ranks.
    in_lists, in_pools = [], []
    for (history, target), ban in zip(examples, masked, strict=True):
        items = model.generate([history], max(CUTOFFS), 0, [set(ban)])[0].items
        in_lists.append(float(ranks_in_lists([items], [target])[0]))
        pool = [i for i in range(1, N_ITEMS) if i not in ban]
        scores = model.table[history[-1]].detach()[pool]
        in_pools.append(int(ranks_from_scores(scores.unsqueeze(0), [pool.index(target)])[0]))
    assert ranking_metrics(in_lists) == sequential
    assert ranking_metrics(in_pools) == sequential
