"""SASRec: the contract on tiny configs."""

from __future__ import annotations

from models.sequential import build_recommender
from tests.unit.recommender_helpers import (
    N_ITEMS,
    check_knowledge_only_item,
    check_learns_successor,
    check_padded_history_scores_finite,
    check_round_trip,
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


def test_save_pretrained_round_trip_keeps_scores_and_knowledge(tmp_path):
    check_round_trip("sasrec", TINY, tmp_path)


def test_unknown_config_key_is_an_error():
    try:
        build_recommender("sasrec", N_ITEMS, {"hiden_size": 8})
    except ValueError as error:
        assert "hiden_size" in str(error)
    else:
        raise AssertionError("a misspelt config key was accepted")
