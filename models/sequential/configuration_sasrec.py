"""SASRec's configuration: the shared fields plus its transformer's shape."""

from __future__ import annotations

from dataclasses import dataclass

from models.sequential.base import RecommenderConfig


@dataclass
class SASRecConfig(RecommenderConfig):
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    attn_dropout_prob: float = 0.2
    layer_norm_eps: float = 1e-12
