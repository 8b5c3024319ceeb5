"""The contract every sequential recommender keeps (RecBole's, trimmed to what serving,
training and alignment use), and what the models share.

Sequences are RecBole's layout: item ids left-aligned, 0-padded on the right, with
their lengths. Item 0 is padding; real items are 1..n_items-1. A model only writes
`sequence_output`: one causal hidden state per position (position t sees items 0..t),
so one forward trains every position (the all-positions objective) and the state at
the last real position is the user representation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models import artifacts
from models.knowledge.fusion import KnowledgeFusion, TextKnowledge

FAMILY = "sequential"
# The knowledge channels' tables' keys in model.safetensors (non-persistent buffers).
KNOWLEDGE_KEY = "fusion.knowledge"  # the LLM channel
FACTS_KEY = "fusion.facts"
# The single projection of artifacts saved before the two channels: refused, not guessed.
SINGLE_VECTOR_KEY = "fusion.projection.weight"


@dataclass
class RecommenderConfig:
    """What every model's config holds; each model's config adds its own fields."""

    hidden_size: int = 64
    max_seq_length: int = 50
    dropout_prob: float = 0.2
    initializer_range: float = 0.02
    # "ce": softmax over all items; "sampled": softmax over the target and `num_negatives`
    # items drawn uniformly per batch (for catalogs too large for the full softmax).
    loss_type: str = "ce"
    num_negatives: int = 1024
    # Width of each knowledge channel's projection, concatenated to the ID embedding.
    knowledge_size: int = 64
    knowledge_dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """The config from a dict; an unknown key is an error, not ignored."""
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**values)


@dataclass
class LoadedRecommender:
    model: SequentialRecommender
    item_ids: np.ndarray  # int64 external item id per model index
    extra: dict  # what the saver passed as `extra` (dataset, seed, scores...)


class SequentialRecommender(nn.Module):
    """user_representation / item_representations / full_scores / loss / extend_items."""

    name: str = ""
    config_class: type[RecommenderConfig] = RecommenderConfig

    def __init__(
        self,
        n_items: int,
        config: RecommenderConfig,
        knowledge: torch.Tensor | None = None,
        text: TextKnowledge | None = None,
        facts: torch.Tensor | None = None,
    ):
        super().__init__()
        if n_items < 2:
            raise ValueError("n_items counts padding (index 0) and at least one real item")
        if config.loss_type not in ("ce", "sampled"):
            raise ValueError(f"loss_type must be 'ce' or 'sampled', got {config.loss_type!r}")
        self.config = config
        self.fusion = KnowledgeFusion(
            n_items,
            config.hidden_size,
            knowledge=knowledge,
            text=text,
            knowledge_size=config.knowledge_size,
            dropout=config.knowledge_dropout,
            initializer_range=config.initializer_range,
            facts=facts,
        )

    # --- what a model writes -------------------------------------------------

    def sequence_output(
        self, items: torch.Tensor, item_seq: torch.Tensor, item_seq_len: torch.Tensor
    ) -> torch.Tensor:
        """Causal hidden states [B, L, D]; `items` is the item table [n_items, D]."""
        raise NotImplementedError

    # --- the contract ----------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self.fusion.n_items

    @property
    def knowledge_dim(self) -> int | None:
        """The LLM channel's width (None without it)."""
        return self.fusion.knowledge_dim

    @property
    def facts_dim(self) -> int | None:
        return self.fusion.facts_dim

    def item_representations(self) -> torch.Tensor:
        """[n_items, D]: output-side item vectors (knowledge-aware); score = dot product."""
        return self.fusion()

    def _last_state(self, states: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        last = (item_seq_len.long() - 1).clamp(min=0, max=states.shape[1] - 1)
        return states[torch.arange(states.shape[0], device=states.device), last]

    def _truncate(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor):
        """Keep the most recent `max_seq_length` items of longer sequences."""
        limit = self.config.max_seq_length
        if item_seq.shape[1] <= limit:
            return item_seq, item_seq_len
        lengths = item_seq_len.long().clamp(max=item_seq.shape[1])
        start = (lengths - limit).clamp(min=0)
        index = start.unsqueeze(1) + torch.arange(limit, device=item_seq.device)
        return item_seq.gather(1, index.clamp(max=item_seq.shape[1] - 1)) * (
            index < lengths.unsqueeze(1)
        ), lengths.clamp(max=limit)

    def user_representation(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor
    ) -> torch.Tensor:
        """[B, D]: the hidden state after the last real item."""
        item_seq, item_seq_len = self._truncate(item_seq, item_seq_len)
        states = self.sequence_output(self.fusion(), item_seq, item_seq_len)
        return self._last_state(states, item_seq_len)

    def full_scores(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """[B, n_items]; padding (column 0) scores -inf so it is never recommended."""
        item_seq, item_seq_len = self._truncate(item_seq, item_seq_len)
        items = self.fusion()
        user = self._last_state(self.sequence_output(items, item_seq, item_seq_len), item_seq_len)
        scores = user @ items.T
        scores[:, 0] = float("-inf")
        return scores

    def loss(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy of the next items.

        `targets` [B]: the item after each sequence (the last position predicts it).
        `targets` [B, L]: the causal all-positions objective, the item after each
        position (0 where there is none: ignored).
        """
        items = self.fusion()
        states = self.sequence_output(items, item_seq, item_seq_len)
        if targets.dim() == 1:
            states, targets = self._last_state(states, item_seq_len), targets
        else:
            keep = targets > 0
            states, targets = states[keep], targets[keep]
        if self.config.loss_type == "sampled":
            return self._sampled_softmax(states, targets, items)
        logits = states @ items.T
        logits[:, 0] = torch.finfo(logits.dtype).min
        return nn.functional.cross_entropy(logits, targets)

    def _sampled_softmax(
        self, states: torch.Tensor, targets: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Target against negatives shared by the batch, drawn uniformly from the real
        items (uniform: no log-Q correction needed); a negative equal to the target is masked."""
        count = min(self.config.num_negatives, self.n_items - 1)
        negatives = torch.randint(1, self.n_items, (count,), device=states.device)
        positive = (states * items[targets]).sum(-1, keepdim=True)
        negative = states @ items[negatives].T
        negative = negative.masked_fill(
            negatives.unsqueeze(0) == targets.unsqueeze(1), torch.finfo(negative.dtype).min
        )
        logits = torch.cat([positive, negative], dim=1)
        return nn.functional.cross_entropy(logits, torch.zeros_like(targets))

    def extend_items(
        self, count: int, knowledge: torch.Tensor | None = None, facts: torch.Tensor | None = None
    ) -> None:
        """Grow the item tables by `count` new items (indices n_items..n_items+count-1), with
        their LLM channel's and facts channel's rows (zeros where not given)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self.fusion.extend(count, knowledge, facts)

    # --- the artifact ------------------------------------------------------------

    def save_pretrained(
        self, folder: Path | str, item_ids: np.ndarray, extra: dict | None = None
    ) -> Path:
        folder = Path(folder)
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(item_ids) != self.n_items:
            raise ValueError(f"{len(item_ids)} item ids for a model of {self.n_items} items")
        state = {
            name: tensor
            for name, tensor in self.state_dict().items()
            if not name.startswith("fusion.text.")
        }
        with torch.no_grad():
            table = self.fusion.knowledge_table()
        if table is not None:
            state[KNOWLEDGE_KEY] = table.float()
        if self.fusion.facts is not None:
            state[FACTS_KEY] = self.fusion.facts.float()
        artifacts.save_tensors(folder, state)
        artifacts.save_tensors(folder, {"item_ids": torch.from_numpy(item_ids)}, artifacts.IDS_FILE)
        return artifacts.save_config(
            folder, FAMILY, self.name, self.config.to_dict(), extra=extra or {}
        )

    @classmethod
    def from_pretrained(cls, folder: Path | str, device: str = "cpu") -> LoadedRecommender:
        """The saved model in eval mode on `device`, with its item ids; `SASRec.from_pretrained`
        refuses another model's folder, `SequentialRecommender.from_pretrained` takes any."""
        from models.sequential import build_recommender, model_class_for

        folder = Path(folder)
        document = artifacts.load_config(folder, FAMILY)
        model_type = document["model_type"]
        if not issubclass(model_class_for(model_type), cls):
            raise artifacts.ArtifactError(f"{folder} holds a {model_type} model, not {cls.name}")
        state = artifacts.load_tensors(folder)
        item_ids = artifacts.load_tensors(folder, artifacts.IDS_FILE)["item_ids"].numpy()
        if SINGLE_VECTOR_KEY in state:
            raise artifacts.ArtifactError(
                f"{folder} is a single-vector knowledge model (saved before the facts and LLM "
                "channels were split): it no longer loads; train it again"
            )
        knowledge = state.pop(KNOWLEDGE_KEY, None)
        facts = state.pop(FACTS_KEY, None)
        model = build_recommender(
            model_type, len(item_ids), document["config"], knowledge, facts=facts
        )
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise artifacts.ArtifactError(f"{folder}: weights do not fit: {error}") from error
        return LoadedRecommender(model.to(device).eval(), item_ids, document["extra"])


def padding_mask(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """[B, L] True at real positions."""
    positions = torch.arange(item_seq.shape[1], device=item_seq.device)
    return positions.unsqueeze(0) < item_seq_len.unsqueeze(1)


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over allowed entries; a row with none allowed gives zeros, not NaN
    (the -inf fill of a plain masked softmax makes such a row 0/0)."""
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim)
    return weights * allowed.any(dim=dim, keepdim=True)
