"""ID-based sequential recommenders with one contract (`base.SequentialRecommender`)."""

from __future__ import annotations

import dataclasses

import torch

from models.sequential.base import RecommenderConfig, SequentialRecommender
from models.sequential.caser import Caser, CaserConfig
from models.sequential.gru4rec import GRU4Rec, GRU4RecConfig
from models.sequential.lightsans import LightSANs, LightSANsConfig
from models.sequential.sasrec import SASRec, SASRecConfig

MODELS: dict[str, type[SequentialRecommender]] = {
    model.name: model for model in (SASRec, LightSANs, Caser, GRU4Rec)
}


def build_config(name: str, config: dict | None = None) -> RecommenderConfig:
    """The model's config dataclass from a dict; an unknown key is an error, not ignored."""
    model_class = model_class_for(name)
    fields = {field.name for field in dataclasses.fields(model_class.config_class)}
    unknown = sorted(set(config or {}) - fields)
    if unknown:
        raise ValueError(f"unknown {name} config keys: {', '.join(unknown)}")
    return model_class.config_class(**(config or {}))


def model_class_for(name: str) -> type[SequentialRecommender]:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def build_recommender(
    name: str,
    n_items: int,
    config: dict | None = None,
    knowledge: torch.Tensor | None = None,
    text=None,
) -> SequentialRecommender:
    """A model by name. `knowledge` [n_items, K] (row 0 = padding) turns on knowledge
    fusion with pre-encoded vectors; `text` (a `TextKnowledge`) with a trainable encoder."""
    if knowledge is not None and not isinstance(knowledge, torch.Tensor):
        knowledge = torch.as_tensor(knowledge)
    return model_class_for(name)(n_items, build_config(name, config), knowledge, text)


__all__ = [
    "MODELS",
    "Caser",
    "CaserConfig",
    "GRU4Rec",
    "GRU4RecConfig",
    "LightSANs",
    "LightSANsConfig",
    "RecommenderConfig",
    "SASRec",
    "SASRecConfig",
    "SequentialRecommender",
    "build_config",
    "build_recommender",
]
