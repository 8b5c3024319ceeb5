"""LightSANs: the contract on tiny configs."""

from __future__ import annotations

from tests.unit.recommender_helpers import (
    check_knowledge_only_item,
    check_learns_successor,
    check_padded_history_scores_finite,
    check_round_trip,
)

TINY = {
    "hidden_size": 16,
    "max_seq_length": 8,
    "dropout_prob": 0.0,
    "n_layers": 1,
    "n_heads": 2,
    "k_interests": 3,
    "inner_size": 32,
    "attn_dropout_prob": 0.0,
}


def test_learns_the_successor_of_each_item():
    check_learns_successor("lightsans", TINY)


def test_learns_the_successor_with_knowledge():
    check_learns_successor("lightsans", TINY, with_knowledge=True)


def test_padded_and_empty_histories_get_finite_scores():
    check_padded_history_scores_finite("lightsans", TINY)


def test_knowledge_only_item_gets_a_finite_score():
    check_knowledge_only_item("lightsans", TINY)


def test_save_pretrained_round_trip_keeps_scores_and_knowledge(tmp_path):
    check_round_trip("lightsans", TINY, tmp_path)
