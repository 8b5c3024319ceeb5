"""ID-based sequential recommenders with one contract (`base.SequentialRecommender`)."""

from __future__ import annotations

import torch

from models.sequential.base import LoadedRecommender, RecommenderConfig, SequentialRecommender
from models.sequential.configuration_caser import CaserConfig
from models.sequential.configuration_gru4rec import GRU4RecConfig
from models.sequential.configuration_lightsans import LightSANsConfig
from models.sequential.configuration_sasrec import SASRecConfig
from models.sequential.modeling_caser import Caser
from models.sequential.modeling_gru4rec import GRU4Rec
from models.sequential.modeling_lightsans import LightSANs
from models.sequential.modeling_sasrec import SASRec

MODELS: dict[str, type[SequentialRecommender]] = {
    model.name: model for model in (SASRec, LightSANs, Caser, GRU4Rec)
}


def build_config(name: str, config: dict | None = None) -> RecommenderConfig:
    """The model's config dataclass from a dict; an unknown key is an error, not ignored."""
    return model_class_for(name).config_class.from_dict(config or {})


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
    facts: torch.Tensor | None = None,
) -> SequentialRecommender:
    """A model by name. `knowledge` [n_items, K] (row 0 = padding) turns on the LLM channel
    with pre-encoded vectors, `text` (a `TextKnowledge`) with a trainable encoder; `facts`
    [n_items, F] the facts channel."""
    if knowledge is not None and not isinstance(knowledge, torch.Tensor):
        knowledge = torch.as_tensor(knowledge)
    if facts is not None and not isinstance(facts, torch.Tensor):
        facts = torch.as_tensor(facts)
    return model_class_for(name)(n_items, build_config(name, config), knowledge, text, facts)


__all__ = [
    "MODELS",
    "Caser",
    "CaserConfig",
    "GRU4Rec",
    "GRU4RecConfig",
    "LightSANs",
    "LightSANsConfig",
    "LoadedRecommender",
    "RecommenderConfig",
    "SASRec",
    "SASRecConfig",
    "SequentialRecommender",
    "build_config",
    "build_recommender",
]
