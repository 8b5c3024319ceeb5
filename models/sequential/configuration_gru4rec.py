"""GRU4Rec's configuration: the shared fields plus the GRU's width and depth."""

from __future__ import annotations

from dataclasses import dataclass

from models.sequential.base import RecommenderConfig


@dataclass
class GRU4RecConfig(RecommenderConfig):
    gru_hidden_size: int = 128
    num_layers: int = 1
