"""A tiny random GenRec for the GenRec tests: 30 items, 8 users."""

from __future__ import annotations

import torch

from models.genrec import DigitTokenizer, GenRec, GenRecConfig

N_ITEMS = 31  # rows: padding + items 1..30; in one-digit pieces, two sub-tokens each
N_USERS = 9


def tiny_model(seed: int = 0, max_history: int = 6, piece_digits: int = 1) -> GenRec:
    torch.manual_seed(seed)
    config = GenRecConfig(
        n_items=N_ITEMS,
        n_users=N_USERS,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        attention_heads=2,
        ffn_dim=64,
        dropout=0.0,
        init_std=0.2,
        max_history=max_history,
        piece_digits=piece_digits,
    )
    return GenRec(config, DigitTokenizer(N_USERS, N_ITEMS, piece_digits=piece_digits))
