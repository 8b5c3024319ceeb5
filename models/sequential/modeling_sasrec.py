"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence."""

from __future__ import annotations

import torch
from torch import nn

from models.sequential.configuration_sasrec import SASRecConfig
from models.sequential.transformer import (
    MultiHeadSelfAttention,
    TransformerRecommender,
    causal_allowed,
)


class SASRec(TransformerRecommender):
    name = "sasrec"
    config_class = SASRecConfig

    def attention(self, config: SASRecConfig) -> nn.Module:
        return MultiHeadSelfAttention(config.hidden_size, config.n_heads, config.attn_dropout_prob)

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
