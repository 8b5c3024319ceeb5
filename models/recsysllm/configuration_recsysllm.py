"""Configuration of RecSysLLM, beside its modelling (Hugging Face's layout)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Marker tokens added to the base LLM's vocabulary: where a span was cut out,
# and where each infilled span opens and closes.
MASK_TOKEN = "<|rec_mask|>"
SPAN_START_TOKEN = "<|rec_span|>"
SPAN_END_TOKEN = "<|rec_end|>"
MARKER_TOKENS = (MASK_TOKEN, SPAN_START_TOKEN, SPAN_END_TOKEN)


@dataclass
class RecSysLLMConfig:
    # LoRA on the attention and MLP projections (the paper's rank 8); rank 0
    # fine-tunes every weight instead (tiny models in tests).
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    # Intra-entity positions 1..max_intra_position-1 (0: not inside a unit);
    # off, the model is plain supervised fine-tuning (the paper's SFT baseline).
    intra_positions: bool = True
    max_intra_position: int = 64
    # Entity-aware masked behaviour texts beside the task examples (off for SFT).
    masked_texts: bool = True
    # Share of entities masked by the entity-level objective.
    entity_mask_ratio: float = 0.15
    # Long-, medium- and short-term shares of a behaviour sequence.
    windows: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.6])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RecSysLLMConfig:
        return cls(**{key: value for key, value in values.items() if key in cls.__annotations__})
