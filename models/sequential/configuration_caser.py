"""Caser's configuration: the shared fields plus its convolutions' window and filters."""

from __future__ import annotations

from dataclasses import dataclass

from models.sequential.base import RecommenderConfig


@dataclass
class CaserConfig(RecommenderConfig):
    window: int = 5  # Caser's L: the items each position's convolutions see
    n_h: int = 16  # horizontal filters per height 1..window
    n_v: int = 4  # vertical filters
    dropout_prob: float = 0.4
