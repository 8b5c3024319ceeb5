"""Knowledge text -> vector: the text encoder's token states, mean-pooled under the
attention mask and L2-normalised (how all-MiniLM-L6-v2 was trained to be used), so
an inner product of two vectors is their cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class TextEncoder:
    def __init__(self, model, tokenizer, max_length: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def name(self) -> str:
        """The encoder's folder name: which encoder made a vector (its provenance)."""
        return Path(getattr(self.model.config, "_name_or_path", "") or "unnamed").name

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 [len(texts), dim], unit rows; texts sorted by length so batches pad little."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[index] for index in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(device)
                states = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                unit = torch.nn.functional.normalize(pooled.float(), dim=-1)
                vectors[chunk] = unit.cpu().numpy()
        return vectors
