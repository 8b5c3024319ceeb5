"""Online trainer helpers: held-out choice, batch layout, the NDCG@10 of the publish check."""

import math

import torch

from workers.trainer import Example, is_held_out, ndcg_at, to_tensors


class FixedScores(torch.nn.Module):
    """Scores every item by a fixed table row chosen by the last history item."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def full_scores(self, item_seq, item_seq_len):
        last = item_seq.gather(1, (item_seq_len - 1).unsqueeze(1)).squeeze(1)
        return self.table[last]


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


def test_ndcg_at_10_counts_rank_positions_and_ignores_padding():
    n_items = 15
    table = torch.zeros(n_items, n_items)
    table[1] = torch.arange(n_items, 0, -1).float()  # after item 1: item 0 first, then 1, 2, ...
    examples = [Example([1], 1), Example([1], 3), Example([1], 12)]
    # Padding (item 0) is never ranked: targets 1 and 3 rank 1st and 3rd, 12 ranks 12th.
    expected = (1 / math.log2(2) + 1 / math.log2(4) + 0) / 3
    assert abs(ndcg_at(FixedScores(table), examples, 4, "cpu") - expected) < 1e-6
