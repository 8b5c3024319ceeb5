"""Caser: the contract on tiny configs."""

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
    "window": 3,
    "n_h": 4,
    "n_v": 2,
}


def test_learns_the_successor_of_each_item():
    check_learns_successor("caser", TINY)


def test_learns_the_successor_with_knowledge():
    check_learns_successor("caser", TINY, with_knowledge=True)


def test_padded_and_empty_histories_get_finite_scores():
    check_padded_history_scores_finite("caser", TINY)


def test_knowledge_only_item_gets_a_finite_score():
    check_knowledge_only_item("caser", TINY)


def test_save_pretrained_round_trip_keeps_scores_and_knowledge(tmp_path):
    check_round_trip("caser", TINY, tmp_path)
