"""Caser (Tang & Wang, 2018): horizontal and vertical convolutions over the embeddings
of the last `window` items.

Written causally so every position gets its own output in one pass (the all-positions
objective): a horizontal filter of height h is a 1-D convolution over time, left-padded,
max-pooled over the window's h-grams that end at or before the position; the vertical
filters are a weighted sum over the window's items, a causal convolution of width
`window`. Caser's user embedding is left out: the contract scores a sequence, so a
user never seen in training is served the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from models.sequential.base import SequentialRecommender, padding_mask
from models.sequential.configuration_caser import CaserConfig


class Caser(SequentialRecommender):
    name = "caser"
    config_class = CaserConfig

    def __init__(self, n_items: int, config: CaserConfig, knowledge=None, text=None, facts=None):
        super().__init__(n_items, config, knowledge, text, facts)
        hidden, window = config.hidden_size, config.window
        self.horizontal = nn.ModuleList(
            nn.Conv1d(hidden, config.n_h, kernel_size=height) for height in range(1, window + 1)
        )
        # Each vertical filter weighs the window's items; applied per embedding dimension.
        self.vertical = nn.Conv1d(1, config.n_v, kernel_size=window, bias=False)
        self.dropout = nn.Dropout(config.dropout_prob)
        self.fc = nn.Linear(config.n_h * window + config.n_v * hidden, hidden)
        self.activation = nn.ReLU()
        self.output = nn.Linear(hidden, hidden)

    def sequence_output(
        self, items: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor
    ) -> torch.Tensor:
        batch, length = item_seq.shape
        window = self.config.window
        real = padding_mask(item_seq, item_seq_len).unsqueeze(-1)
        x = items[item_seq] * real  # [B, L, H]; padding holds zeros
        channels = x.transpose(1, 2)  # [B, H, L]
        padded = nn.functional.pad(channels, (window - 1, 0))  # zeros before the first item
        features = []
        for height, conv in enumerate(self.horizontal, start=1):
            grams = self.activation(conv(padded))  # [B, n_h, L+w-h]: gram j ends at j-w+h
            # Position t's window holds the h-grams ending at t-w+h..t: grams t..t+w-h.
            pooled = nn.functional.max_pool1d(grams, kernel_size=window - height + 1, stride=1)
            features.append(pooled)  # [B, n_h, L]
        horizontal = torch.cat(features, dim=1).transpose(1, 2)  # [B, L, n_h * w]
        # Vertical: per dimension, a learned weighting of the window's items.
        per_dimension = padded.reshape(batch * padded.shape[1], 1, -1)
        vertical = self.vertical(per_dimension)  # [B*H, n_v, L]
        vertical = vertical.reshape(batch, -1, self.config.n_v, length)
        vertical = vertical.permute(0, 3, 2, 1).reshape(batch, length, -1)  # [B, L, n_v*H]
        combined = self.dropout(torch.cat([horizontal, vertical], dim=-1))
        return self.output(self.activation(self.fc(combined)))
