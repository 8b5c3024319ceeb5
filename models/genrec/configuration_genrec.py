"""GenRec's configuration: the BART shape plus the ID tables and how IDs are written."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenRecConfig:
    """Everything needed to rebuild a GenRec model before its weights are loaded.

    `n_items` and `n_users` count the ID-table rows, row 0 included: row 0 is
    "no ID" (special tokens, an unknown user) and stays zero.
    """

    n_items: int
    n_users: int
    d_model: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int = 256
    dropout: float = 0.1
    # Dropout on attention weights: off by default, since any makes PyTorch's attention
    # leave its fused kernel for the slow path (a third of a CPU training step).
    attention_dropout: float = 0.0
    # BART's 0.02 suits its 1024-wide layers; narrow ones trained from scratch need more
    # spread, or attention stays near uniform and the decoder learns only item frequencies.
    init_std: float = 0.1
    max_history: int = 20
    # Digits per ID sub-token of the built-in vocabulary (see tokenization.py).
    piece_digits: int = 2
    # The BART checkpoint this model started from (its tokenizer writes the IDs); empty:
    # a BART built from the fields above with the word-level digit tokenizer.
    bart_path: str = ""
    # The transformers BartConfig as a dict once built, so a saved model reloads without
    # the original checkpoint.
    bart_config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GenRecConfig:
        return cls(**values)

    @classmethod
    def from_settings(cls, settings, n_items: int, n_users: int) -> GenRecConfig:
        """From `GenRecSettings`: the small from-scratch shape unless `bart_path` is set."""
        return cls(
            n_items=n_items,
            n_users=n_users,
            d_model=settings.d_model,
            encoder_layers=settings.encoder_layers,
            decoder_layers=settings.decoder_layers,
            attention_heads=settings.attention_heads,
            ffn_dim=settings.ffn_dim,
            dropout=settings.dropout,
            attention_dropout=settings.attention_dropout,
            init_std=settings.init_std,
            max_history=settings.max_history,
            piece_digits=settings.piece_digits,
            bart_path=settings.bart_path,
        )
