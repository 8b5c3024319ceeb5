"""LightSANs: the contract on tiny configs."""

from __future__ import annotations

from tests.unit.recommender_helpers import TINY_ATTENTION, RecommenderContract


class TestLightSANs(RecommenderContract):
    name = "lightsans"
    config = {**TINY_ATTENTION, "k_interests": 3}
