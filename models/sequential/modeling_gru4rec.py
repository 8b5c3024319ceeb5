"""GRU4Rec (Hidasi et al., 2016; Tan et al.'s improvements as RecBole has them): a GRU
over the item sequence; its state after each item is that position's output."""

from __future__ import annotations

import torch
from torch import nn

from models.sequential.base import SequentialRecommender
from models.sequential.configuration_gru4rec import GRU4RecConfig


class GRU4Rec(SequentialRecommender):
    name = "gru4rec"
    config_class = GRU4RecConfig

    def __init__(self, n_items: int, config: GRU4RecConfig, knowledge=None, text=None, facts=None):
        super().__init__(n_items, config, knowledge, text, facts)
        self.input_dropout = nn.Dropout(config.dropout_prob)
        self.gru = nn.GRU(
            config.hidden_size, config.gru_hidden_size, config.num_layers, batch_first=True
        )
        self.output = nn.Linear(config.gru_hidden_size, config.hidden_size)

    def sequence_output(
        self, items: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor
    ) -> torch.Tensor:
        # Right padding comes after the real items, so a plain (causal) pass is exact for
        # every real position; padded positions' outputs are never read.
        states, _ = self.gru(self.input_dropout(items[item_seq]))
        return self.output(states)
