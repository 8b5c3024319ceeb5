"""LightSANs' configuration: the shared fields plus its low-rank attention's shape."""

from __future__ import annotations

from dataclasses import dataclass

from models.sequential.base import RecommenderConfig


@dataclass
class LightSANsConfig(RecommenderConfig):
    n_layers: int = 2
    n_heads: int = 2
    k_interests: int = 5
    inner_size: int = 256
    attn_dropout_prob: float = 0.2
    layer_norm_eps: float = 1e-12
