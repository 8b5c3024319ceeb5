"""LightSANs (Fan et al., 2021): self-attention through k latent interests, with the
position attention decoupled from the item attention.

Keys and values are aggregated into k interests (a softmax over the sequence per
interest), each query attends to those k instead of all L items, and a separate
position-to-position attention adds a context from the positions alone. Written
causally for the all-positions objective: position t's interests aggregate items
0..t only (running sums of the softmax terms), and position attention is causal.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.sequential.base import masked_softmax, padding_mask
from models.sequential.configuration_lightsans import LightSANsConfig
from models.sequential.transformer import TransformerRecommender, causal_allowed, head_size

# exp(-60) is still a normal float32: every real position keeps a positive softmax sum.
MIN_LOGIT_GAP = -60.0


class LowRankCausalAttention(nn.Module):
    def __init__(self, hidden_size: int, n_heads: int, k_interests: int, dropout: float):
        super().__init__()
        self.n_heads, self.head_size = n_heads, head_size(hidden_size, n_heads)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.key_interests = nn.Linear(hidden_size, k_interests)
        self.value_interests = nn.Linear(hidden_size, k_interests)
        self.position_query = nn.Linear(hidden_size, hidden_size)
        self.position_key = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.n_heads, self.head_size)

    def _prefix_interests(
        self, logits: torch.Tensor, states: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """[B, L, k, D]: at each position, the softmax-weighted sum of the states of items
        0..t per interest, a running sum over positions with one shift per sequence."""
        logits = logits.masked_fill(~real.unsqueeze(-1), torch.finfo(logits.dtype).min)
        shift = logits.max(dim=1, keepdim=True).values
        weights = torch.exp((logits - shift).clamp(min=MIN_LOGIT_GAP)) * real.unsqueeze(-1)
        totals = weights.cumsum(dim=1).clamp(min=torch.finfo(weights.dtype).tiny)  # [B, L, k]
        sums = (weights.unsqueeze(-1) * states.unsqueeze(2)).cumsum(dim=1)  # [B, L, k, D]
        return sums / totals.unsqueeze(-1)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, real: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        batch, length, hidden = x.shape
        keys = self._prefix_interests(self.key_interests(x), self.key(x), real)
        values = self._prefix_interests(self.value_interests(x), self.value(x), real)
        query = self._heads(self.query(x))  # [B, L, h, d]
        keys = self._heads(keys)  # [B, L, k, h, d]
        values = self._heads(values)
        scores = torch.einsum("blhd,blkhd->blhk", query, keys) / math.sqrt(self.head_size)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        item_context = torch.einsum("blhk,blkhd->blhd", weights, values)

        # Decoupled positions: position-to-position attention over the items' values.
        pos_query = self._heads(self.position_query(positions)).transpose(0, 1)  # [h, L, d]
        pos_key = self._heads(self.position_key(positions)).transpose(0, 1)
        pos_scores = pos_query @ pos_key.transpose(-1, -2) / math.sqrt(self.head_size)
        pos_weights = self.dropout(masked_softmax(pos_scores.unsqueeze(0), allowed.unsqueeze(1)))
        item_values = self._heads(self.value(x)).transpose(1, 2)  # [B, h, L, d]
        position_context = (pos_weights @ item_values).transpose(1, 2)  # [B, L, h, d]
        context = (item_context + position_context).reshape(batch, length, hidden)
        return self.output(context)


class LightSANs(TransformerRecommender):
    name = "lightsans"
    config_class = LightSANsConfig

    def attention(self, config: LightSANsConfig) -> nn.Module:
        return LowRankCausalAttention(
            config.hidden_size, config.n_heads, config.k_interests, config.attn_dropout_prob
        )

    def sequence_output(
        self, items: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor
    ) -> torch.Tensor:
        x = self.input_dropout(self.input_norm(items[item_seq]))
        allowed = causal_allowed(item_seq, item_seq_len)
        real = padding_mask(item_seq, item_seq_len)
        positions = self.position_embedding(torch.arange(item_seq.shape[1], device=x.device))
        for block in self.blocks:
            x = block(x, allowed, real, positions)
        return x
