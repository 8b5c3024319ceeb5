"""SASRec: the contract on tiny configs."""

from __future__ import annotations

from models.sequential import build_recommender
from tests.unit.recommender_helpers import (
    N_ITEMS,
    TINY_ATTENTION,
    RecommenderContract,
    check_learns_successor,
)


class TestSASRec(RecommenderContract):
    name = "sasrec"
    config = TINY_ATTENTION

    def test_learns_the_successor_with_knowledge(self):
        """With knowledge, and trained with the sampled softmax."""
        config = {**self.config, "loss_type": "sampled", "num_negatives": 10}
        check_learns_successor(self.name, config, with_knowledge=True, steps=100)

    def test_unknown_config_key_is_an_error(self):
        try:
            build_recommender("sasrec", N_ITEMS, {"hiden_size": 8})
        except ValueError as error:
            assert "hiden_size" in str(error)
        else:
            raise AssertionError("a misspelt config key was accepted")
