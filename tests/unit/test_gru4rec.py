"""GRU4Rec: the contract on tiny configs."""

from __future__ import annotations

from tests.unit.recommender_helpers import TINY_BASE, RecommenderContract


class TestGRU4Rec(RecommenderContract):
    name = "gru4rec"
    config = {**TINY_BASE, "gru_hidden_size": 32}
