"""SASRec: the contract on tiny configs."""

from __future__ import annotations

import numpy as np
import torch

from models.sequential import build_recommender
from models.sequential.checkpoint import load_recommender, save_recommender
from tests.unit.recommender_helpers import (
    N_ITEMS,
    check_knowledge_only_item,
    check_learns_successor,
    check_padded_history_scores_finite,
    knowledge,
)

TINY = {
    "hidden_size": 16,
    "n_layers": 1,
    "n_heads": 2,
    "inner_size": 32,
    "max_seq_length": 8,
    "dropout_prob": 0.0,
    "attn_dropout_prob": 0.0,
}


def test_learns_the_successor_of_each_item():
    check_learns_successor("sasrec", TINY)


def test_learns_the_successor_with_knowledge_and_sampled_softmax():
    config = {**TINY, "loss_type": "sampled", "num_negatives": 10}
    check_learns_successor("sasrec", config, with_knowledge=True, steps=100)


def test_padded_and_empty_histories_get_finite_scores():
    check_padded_history_scores_finite("sasrec", TINY)


def test_knowledge_only_item_gets_a_finite_score():
    check_knowledge_only_item("sasrec", TINY)


def test_checkpoint_round_trip_keeps_scores_and_knowledge(tmp_path):
    torch.manual_seed(0)
    table = knowledge()
    model = build_recommender("sasrec", N_ITEMS, TINY, knowledge=table).eval()
    item_ids = np.arange(N_ITEMS, dtype=np.int64) * 10
    save_recommender(model, tmp_path, item_ids, extra={"dataset": "toy"})
    loaded = load_recommender(tmp_path)
    history, lengths = torch.tensor([[1, 2, 3, 0, 0, 0, 0, 0]]), torch.tensor([3])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model.full_scores(history, lengths), model.full_scores(history, lengths)
        )
    assert loaded.extra == {"dataset": "toy"}
    np.testing.assert_array_equal(loaded.item_ids, item_ids)
    np.testing.assert_array_equal(np.load(tmp_path / "knowledge.npy"), table.numpy())
    # knowledge.npy is the truth: a rewritten table (alignment does that) is what loads.
    np.save(tmp_path / "knowledge.npy", np.zeros_like(table.numpy()))
    reloaded = load_recommender(tmp_path).model
    assert reloaded.fusion.knowledge.abs().sum() == 0


def test_unknown_config_key_is_an_error():
    try:
        build_recommender("sasrec", N_ITEMS, {"hiden_size": 8})
    except ValueError as error:
        assert "hiden_size" in str(error)
    else:
        raise AssertionError("a misspelt config key was accepted")
