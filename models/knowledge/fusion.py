"""Knowledge fusion (SeRALM's "additional feature field"), model-agnostic.

An item's representation = merge(concat(ID embedding, projection(knowledge vector))).
The same representation is the recommender's input and its output item table
(scores are dot products), so an item with knowledge but no interactions still
gets a meaningful score.

Two sources of knowledge vectors:
- `KnowledgeFusion(knowledge=table)`: pre-encoded vectors held as a buffer, only
  the projection is trained (the default, and what serving uses);
- `KnowledgeFusion(text=TextKnowledge(...))`: the text encoder runs inside the
  forward and is fine-tuned jointly with the recommender (the paper's setting).

Alignment changes the pre-encoded table: `set_knowledge` replaces it (the aligned
LLM's vectors), `swapped_knowledge` lends the layer another table for a block
(one training instance's re-sampled rows).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class TextKnowledge(nn.Module):
    """Every item's knowledge text through a trainable encoder: mean-pooled, normalised.

    Row 0 (padding) and items without text hold an all-padding row and get a zero vector.
    """

    def __init__(self, encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("input_ids", input_ids.long(), persistent=False)
        self.register_buffer("attention_mask", attention_mask.long(), persistent=False)

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self) -> torch.Tensor:
        states = self.encoder(
            input_ids=self.input_ids, attention_mask=self.attention_mask
        ).last_hidden_state
        mask = self.attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def extend(self, count: int) -> None:
        """New items have no text here: all-padding rows (zero vectors)."""
        width = self.input_ids.shape[1]
        pad = torch.zeros(count, width, dtype=torch.long, device=self.input_ids.device)
        self.input_ids = torch.cat([self.input_ids, pad])
        self.attention_mask = torch.cat([self.attention_mask, pad])


class KnowledgeFusion(nn.Module):
    """Item representations [n_items, hidden] from IDs and (optionally) knowledge."""

    def __init__(
        self,
        n_items: int,
        hidden_size: int,
        knowledge: torch.Tensor | None = None,
        text: TextKnowledge | None = None,
        knowledge_size: int = 64,
        dropout: float = 0.0,
        initializer_range: float = 0.02,
    ):
        super().__init__()
        if knowledge is not None and text is not None:
            raise ValueError("give pre-encoded knowledge vectors or a text encoder, not both")
        self.initializer_range = initializer_range
        self.item_embedding = nn.Embedding(n_items, hidden_size, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=initializer_range)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.text = text
        if knowledge is not None:
            if knowledge.shape[0] != n_items:
                raise ValueError(
                    f"knowledge has {knowledge.shape[0]} rows for {n_items} items (row 0 = padding)"
                )
            # Not in the state dict: `SequentialRecommender.save_pretrained` stores
            # `knowledge_table()` itself (the pre-encoded form of a text encoder too).
            self.register_buffer("knowledge", knowledge.detach().float().clone(), persistent=False)
        else:
            self.register_buffer("knowledge", None, persistent=False)
        dim = self.knowledge_dim
        if dim:
            self.projection = nn.Linear(dim, knowledge_size)
            self.merge = nn.Linear(hidden_size + knowledge_size, hidden_size)
            self.dropout = nn.Dropout(dropout)

    @property
    def knowledge_dim(self) -> int | None:
        if self.text is not None:
            return self.text.dim
        return None if self.knowledge is None else int(self.knowledge.shape[1])

    @property
    def n_items(self) -> int:
        return self.item_embedding.num_embeddings

    def knowledge_table(self) -> torch.Tensor | None:
        if self.text is not None:
            return self.text()
        return self.knowledge

    def _check_table(self, table: torch.Tensor) -> None:
        if self.knowledge is None:
            raise ValueError(
                "this layer holds no pre-encoded knowledge table to replace"
                + (" (its knowledge comes from a text encoder)" if self.text is not None else "")
            )
        if tuple(table.shape) != tuple(self.knowledge.shape):
            raise ValueError(
                f"a knowledge table must be {list(self.knowledge.shape)} (row 0 = padding), "
                f"got {list(table.shape)}"
            )

    def set_knowledge(self, table: torch.Tensor) -> None:
        """Replace the knowledge table for good (same shape). The layer keeps its own copy,
        never writes into the old tensor: that one may be a table the caller still uses."""
        self._check_table(table)
        self.knowledge = table.detach().to(self.knowledge.device, torch.float32).clone()

    @contextlib.contextmanager
    def swapped_knowledge(self, table: torch.Tensor) -> Iterator[None]:
        """`table` is the knowledge inside the block, as given (not copied: a table built
        from differentiable rows keeps its graph), and the previous table after it."""
        self._check_table(table)
        previous = self.knowledge
        self.knowledge = table
        try:
            yield
        finally:
            self.knowledge = previous

    def forward(self) -> torch.Tensor:
        """Every item's representation: [n_items, hidden]."""
        ids = self.item_embedding.weight
        table = self.knowledge_table()
        if table is None:
            return ids
        projected = self.dropout(self.projection(table.to(ids.dtype)))
        return self.merge(torch.cat([ids, projected], dim=-1))

    def extend(self, count: int, knowledge: torch.Tensor | None) -> None:
        """Grow the tables by `count` items. With knowledge, a new item's ID embedding
        starts at zero, so its representation comes from its knowledge vector alone."""
        old = self.item_embedding.weight
        if self.knowledge_dim:
            new = torch.zeros(count, old.shape[1], device=old.device, dtype=old.dtype)
        else:
            new = torch.randn(count, old.shape[1], device=old.device, dtype=old.dtype)
            new = new * self.initializer_range
        embedding = nn.Embedding(self.n_items + count, old.shape[1], padding_idx=0)
        embedding.weight = nn.Parameter(torch.cat([old.detach(), new]))
        self.item_embedding = embedding.to(old.device)
        if self.text is not None:
            self.text.extend(count)
        elif self.knowledge is not None:
            if knowledge is None:
                knowledge = torch.zeros(count, self.knowledge.shape[1])
            if knowledge.shape != (count, self.knowledge.shape[1]):
                raise ValueError(
                    f"knowledge for new items must be [{count}, {self.knowledge.shape[1]}], "
                    f"got {list(knowledge.shape)}"
                )
            self.knowledge = torch.cat(
                [self.knowledge, knowledge.to(self.knowledge.device, torch.float32)]
            )
        elif knowledge is not None:
            raise ValueError("this recommender was built without knowledge")
