"""Online trainer helpers: held-out choice, batch layout, and the publish check, whose
held-out NDCG@10 is the evaluation protocol's and which refuses a broken model."""

import math

import pytest
import torch

from streamrec.registry import ModelRegistry
from streamrec.settings import Settings
from workers.trainer import CycleStats, OnlineTrainer
from workers.trainer_examples import Example, is_held_out, to_tensors
from workers.trainer_gate import heldout_ndcg

N_ITEMS = 15


class TableRecommender(torch.nn.Module):
    """Scores every item by a learnable table row chosen by the last history item."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def full_scores(self, item_seq, item_seq_len):
        last = item_seq.gather(1, (item_seq_len - 1).unsqueeze(1)).squeeze(1)
        return self.table[last]


def successor_model() -> TableRecommender:
    """After item i, item i % 14 + 1 scores highest; the rest by a fixed order."""
    table = torch.arange(N_ITEMS, dtype=torch.float).repeat(N_ITEMS, 1) / N_ITEMS
    for item in range(1, N_ITEMS):
        table[item, item % (N_ITEMS - 1) + 1] = 10.0
    return TableRecommender(table)


def test_held_out_choice_is_stable_and_near_the_fraction():
    ids = [f"event-{n}" for n in range(4000)]
    chosen = [is_held_out(event_id, 0.1) for event_id in ids]
    assert chosen == [is_held_out(event_id, 0.1) for event_id in ids]
    assert 0.08 < sum(chosen) / len(ids) < 0.12
    assert not any(is_held_out(event_id, 0.0) for event_id in ids)


def test_histories_are_left_aligned_zero_padded_and_cut_to_the_newest_items():
    seqs, lens, targets = to_tensors([Example([1, 2], 3), Example([4, 5, 6, 7], 8)], 3, "cpu")
    assert seqs.tolist() == [[1, 2, 0], [5, 6, 7]]
    assert lens.tolist() == [2, 3] and targets.tolist() == [3, 8]


def test_heldout_ndcg_masks_padding_and_the_history_but_never_the_target():
    table = torch.zeros(N_ITEMS, N_ITEMS)
    table[1] = torch.arange(N_ITEMS, 0, -1).float()  # after item 1: item 0 first, then 1, 2, ...
    examples = [Example([1], 1), Example([1], 3), Example([9, 5, 1], 12)]
    # Padding and the history never rank: target 1 (its own history) ranks 1st, 3 ranks 2nd
    # (after 2), 12 ranks 9th (after 2-4, 6-8, 10 and 11: 9 is masked too, though cut from
    # the two-item window the model reads).
    expected = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(10)) / 3
    ndcg, problem = heldout_ndcg(TableRecommender(table), examples, 2)
    assert ndcg == pytest.approx(expected) and problem is None


def broken(kind: str) -> TableRecommender:
    model = successor_model()
    with torch.no_grad():
        model.table.fill_(float("nan") if kind == "nan" else 0.5)
    return model


@pytest.mark.parametrize("kind", ["nan", "constant"])
def test_a_model_with_nan_or_constant_scores_is_never_published(tmp_path, kind):
    settings = Settings(data_dir=tmp_path)
    # Any regression is tolerated: only the check of the scores stands in the way.
    settings.workers.trainer_regression_tolerance = 1.0
    settings.workers.device = "cpu"
    trainer = OnlineTrainer(settings)
    trainer.model, trainer.baseline = broken(kind), successor_model()
    trainer.holdout.extend(Example([item], item % (N_ITEMS - 1) + 1) for item in range(1, N_ITEMS))
    assert heldout_ndcg(trainer.baseline, list(trainer.holdout), 5) == (1.0, None)

    decision = trainer.evaluate_and_publish(CycleStats())

    assert not decision.published and decision.version is None
    assert decision.metrics["heldout_ndcg@10"] == 0.0  # pessimistic ranks: no hit at all
    assert f"{'non-finite' if kind == 'nan' else 'constant'} scores" in decision.reason
    assert ModelRegistry.from_settings(settings).latest(settings.recommender.family) is None
    # Rolled back to the published weights.
    assert heldout_ndcg(trainer.model, list(trainer.holdout), 5) == (1.0, None)
