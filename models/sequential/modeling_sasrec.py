"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence."""

from __future__ import annotations

import torch
from torch import nn

from models.sequential.base import SequentialRecommender
from models.sequential.configuration_sasrec import SASRecConfig
from models.sequential.transformer import (
    MultiHeadSelfAttention,
    TransformerBlock,
    causal_allowed,
)


class SASRec(SequentialRecommender):
    name = "sasrec"
    config_class = SASRecConfig

    def __init__(self, n_items: int, config: SASRecConfig, knowledge=None, text=None):
        super().__init__(n_items, config, knowledge, text)
        hidden = config.hidden_size
        self.position_embedding = nn.Embedding(config.max_seq_length, hidden)
        self.input_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.input_dropout = nn.Dropout(config.dropout_prob)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                MultiHeadSelfAttention(hidden, config.n_heads, config.attn_dropout_prob),
                hidden,
                config.inner_size,
                config.dropout_prob,
                config.layer_norm_eps,
            )
            for _ in range(config.n_layers)
        )
        nn.init.normal_(self.position_embedding.weight, std=config.initializer_range)

    def sequence_output(
        self, items: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor
    ) -> torch.Tensor:
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        x = items[item_seq] + self.position_embedding(positions).unsqueeze(0)
        x = self.input_dropout(self.input_norm(x))
        allowed = causal_allowed(item_seq, item_seq_len)
        for block in self.blocks:
            x = block(x, allowed)
        return x
