"""Caser: the contract on tiny configs."""

from __future__ import annotations

from tests.unit.recommender_helpers import TINY_BASE, RecommenderContract


class TestCaser(RecommenderContract):
    name = "caser"
    config = {**TINY_BASE, "window": 3, "n_h": 4, "n_v": 2}
