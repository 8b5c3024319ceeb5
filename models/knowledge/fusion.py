"""Knowledge fusion (SeRALM's "additional feature field"), model-agnostic, in two channels.

An item's representation = merge(concat(ID embedding, gate_facts * projection_facts(facts
vector), gate_llm * projection_llm(LLM knowledge vector))). The channels are separate
vectors with their own projections: the facts (title, year, genres, encoded alone) and
the LLM's knowledge (its text, encoded alone). Each gate is a learned scalar in (0, 1),
and the merge starts as the identity on the ID embedding, so an untrained layer is
about the ID model and training decides how much of each channel to use; a channel of
noise cannot drown the facts, as one vector of facts followed by the LLM's text did.

The same representation is the recommender's input and its output item table
(scores are dot products), so an item with knowledge but no interactions still
gets a meaningful score.

Two sources of the LLM channel:
- `KnowledgeFusion(knowledge=table)`: pre-encoded vectors held as a buffer, only
  the projection is trained (the default, and what serving uses);
- `KnowledgeFusion(text=TextKnowledge(...))`: the text encoder runs inside the
  forward and is fine-tuned jointly with the recommender (the paper's setting).
The facts channel is always pre-encoded (`facts=table`).

Alignment changes only the LLM channel: `set_knowledge` replaces its table (the
aligned LLM's vectors), `swapped_knowledge` lends the layer another table for a block
(one training instance's re-sampled rows); the facts table is never touched.
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


# The channels, in the order their projections enter the merge.
CHANNELS = ("facts", "llm")
# Each gate's logit at initialisation: sigmoid(-1) = 0.27, so the ID embedding dominates
# an untrained item vector.
GATE_INIT = -1.0


class KnowledgeFusion(nn.Module):
    """Item representations [n_items, hidden] from IDs and (optionally) the two channels."""

    def __init__(
        self,
        n_items: int,
        hidden_size: int,
        knowledge: torch.Tensor | None = None,
        text: TextKnowledge | None = None,
        knowledge_size: int = 64,
        dropout: float = 0.0,
        initializer_range: float = 0.02,
        facts: torch.Tensor | None = None,
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
        # Not in the state dict: `SequentialRecommender.save_pretrained` stores the tables
        # itself (the pre-encoded form of a text encoder too).
        for name, table in (("knowledge", knowledge), ("facts", facts)):
            if table is not None and table.shape[0] != n_items:
                raise ValueError(
                    f"{name} has {table.shape[0]} rows for {n_items} items (row 0 = padding)"
                )
            stored = None if table is None else table.detach().float().clone()
            self.register_buffer(name, stored, persistent=False)
        self.projections = nn.ModuleDict()
        self.gate_logits = nn.ParameterDict()
        for channel in self.channels:
            self.projections[channel] = nn.Linear(self.channel_dim(channel), knowledge_size)
            self.gate_logits[channel] = nn.Parameter(torch.tensor(GATE_INIT))
        if self.channels:
            width = hidden_size + knowledge_size * len(self.channels)
            self.merge = nn.Linear(width, hidden_size)
            with torch.no_grad():  # the identity on the ID embedding, zero bias
                self.merge.weight[:, :hidden_size].copy_(torch.eye(hidden_size))
                self.merge.bias.zero_()
            self.dropout = nn.Dropout(dropout)

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels this layer reads, in CHANNELS order."""
        return tuple(channel for channel in CHANNELS if self.channel_dim(channel))

    def channel_dim(self, channel: str) -> int | None:
        if channel == "facts":
            return None if self.facts is None else int(self.facts.shape[1])
        if channel != "llm":
            raise ValueError(f"unknown knowledge channel {channel!r}; known: {CHANNELS}")
        if self.text is not None:
            return self.text.dim
        return None if self.knowledge is None else int(self.knowledge.shape[1])

    @property
    def knowledge_dim(self) -> int | None:
        """The LLM channel's width (None without it)."""
        return self.channel_dim("llm")

    @property
    def facts_dim(self) -> int | None:
        return self.channel_dim("facts")

    @property
    def n_items(self) -> int:
        return self.item_embedding.num_embeddings

    def gates(self) -> dict[str, float]:
        """Each channel's learned gate in (0, 1): how much of it the items use."""
        return {
            channel: float(torch.sigmoid(logit.detach()))
            for channel, logit in self.gate_logits.items()
        }

    def knowledge_table(self) -> torch.Tensor | None:
        """The LLM channel's table."""
        if self.text is not None:
            return self.text()
        return self.knowledge

    def _table(self, channel: str) -> torch.Tensor:
        return self.facts if channel == "facts" else self.knowledge_table()

    def _check_table(self, table: torch.Tensor) -> None:
        if self.knowledge is None:
            raise ValueError(
                "this layer holds no pre-encoded LLM knowledge table to replace"
                + (" (its knowledge comes from a text encoder)" if self.text is not None else "")
            )
        if tuple(table.shape) != tuple(self.knowledge.shape):
            raise ValueError(
                f"a knowledge table must be {list(self.knowledge.shape)} (row 0 = padding), "
                f"got {list(table.shape)}"
            )

    def set_knowledge(self, table: torch.Tensor) -> None:
        """Replace the LLM channel's table for good (same shape). The layer keeps its own
        copy, never writes into the old tensor: that one may be a table the caller still uses."""
        self._check_table(table)
        self.knowledge = table.detach().to(self.knowledge.device, torch.float32).clone()

    @contextlib.contextmanager
    def swapped_knowledge(self, table: torch.Tensor) -> Iterator[None]:
        """`table` is the LLM channel inside the block, as given (not copied: a table built
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
        if not self.channels:
            return ids
        parts = [ids]
        for channel in self.channels:
            projected = self.projections[channel](self._table(channel).to(ids.dtype))
            parts.append(torch.sigmoid(self.gate_logits[channel]) * self.dropout(projected))
        return self.merge(torch.cat(parts, dim=-1))

    def _grown(self, name: str, count: int, rows: torch.Tensor | None) -> torch.Tensor:
        table = getattr(self, name)
        if rows is None:
            rows = torch.zeros(count, table.shape[1])
        if rows.shape != (count, table.shape[1]):
            raise ValueError(
                f"{name} for new items must be [{count}, {table.shape[1]}], got {list(rows.shape)}"
            )
        return torch.cat([table, rows.to(table.device, torch.float32)])

    def extend(
        self, count: int, knowledge: torch.Tensor | None, facts: torch.Tensor | None = None
    ) -> None:
        """Grow the tables by `count` items (a channel's rows not given: zeros). With a
        channel, a new item's ID embedding starts at zero, so its representation comes
        from its knowledge alone."""
        old = self.item_embedding.weight
        if self.channels:
            new = torch.zeros(count, old.shape[1], device=old.device, dtype=old.dtype)
        else:
            new = torch.randn(count, old.shape[1], device=old.device, dtype=old.dtype)
            new = new * self.initializer_range
        grown = {}
        for name, rows in (("knowledge", knowledge), ("facts", facts)):
            if getattr(self, name) is not None:
                grown[name] = self._grown(name, count, rows)  # checked before anything changes
            elif rows is not None and not (name == "knowledge" and self.text is not None):
                raise ValueError(f"this recommender was built without {name}")
        embedding = nn.Embedding(self.n_items + count, old.shape[1], padding_idx=0)
        embedding.weight = nn.Parameter(torch.cat([old.detach(), new]))
        self.item_embedding = embedding.to(old.device)
        if self.text is not None:
            self.text.extend(count)
        for name, table in grown.items():
            setattr(self, name, table)
