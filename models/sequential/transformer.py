"""The self-attention block SASRec stacks (post-norm residuals, as the original), with
a NaN-safe masked softmax so a fully masked row (an empty history) gives zeros, and
the recommender around a stack of them that SASRec and LightSANs share."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.sequential.base import RecommenderConfig, SequentialRecommender, masked_softmax


def head_size(hidden_size: int, n_heads: int) -> int:
    """Each head's width; the heads must split the hidden size evenly."""
    if hidden_size % n_heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
    return hidden_size // n_heads


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, hidden_size: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.head_size = n_heads, head_size(hidden_size, n_heads)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_size).transpose(1, 2)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """`allowed` [B, L, L]: query i may attend to key j."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)
        weights = self.dropout(masked_softmax(scores, allowed.unsqueeze(1)))
        context = (weights @ v).transpose(1, 2).reshape(x.shape)
        return self.output(context)


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, inner_size: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(hidden_size, inner_size),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(inner_size, hidden_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TransformerBlock(nn.Module):
    def __init__(
        self,
        attention: nn.Module,
        hidden_size: int,
        inner_size: int,
        dropout: float,
        layer_norm_eps: float,
    ):
        super().__init__()
        self.attention = attention
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, dropout)
        self.output_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *attention_args) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, *attention_args)))
        return self.output_norm(x + self.dropout(self.feed_forward(x)))


def causal_allowed(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """[B, L, L]: key j is visible to query i when j <= i and j is a real item."""
    length = item_seq.shape[1]
    positions = torch.arange(length, device=item_seq.device)
    causal = positions.unsqueeze(1) >= positions.unsqueeze(0)
    real = positions.unsqueeze(0) < item_seq_len.unsqueeze(1)
    return causal.unsqueeze(0) & real.unsqueeze(1)


class TransformerRecommender(SequentialRecommender):
    """Position table, input norm and dropout, and `n_layers` blocks around the attention a
    subclass builds; the config carries the transformer's shape (n_layers, n_heads, ...)."""

    def __init__(
        self, n_items: int, config: RecommenderConfig, knowledge=None, text=None, facts=None
    ):
        super().__init__(n_items, config, knowledge, text, facts)
        hidden = config.hidden_size
        self.position_embedding = nn.Embedding(config.max_seq_length, hidden)
        self.input_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.input_dropout = nn.Dropout(config.dropout_prob)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                self.attention(config),
                hidden,
                config.inner_size,
                config.dropout_prob,
                config.layer_norm_eps,
            )
            for _ in range(config.n_layers)
        )
        nn.init.normal_(self.position_embedding.weight, std=config.initializer_range)

    def attention(self, config: RecommenderConfig) -> nn.Module:
        """One block's attention."""
        raise NotImplementedError
