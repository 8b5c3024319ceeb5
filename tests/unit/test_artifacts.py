"""The shared artifact folder (models/artifacts.py): what it refuses, and that serving
never swaps in a version whose files are damaged."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch

from models.artifacts import ArtifactError, load_config, save_config, save_tensors
from models.sequential import SequentialRecommender, build_recommender
from serving.holder import ModelHolder
from serving.recommender import load_serving_model
from streamrec.registry import ModelRegistry
from streamrec.settings import Settings

TINY = {"hidden_size": 8, "n_layers": 1, "n_heads": 2, "inner_size": 16, "max_seq_length": 4}


def test_config_names_the_family_and_covers_every_file(tmp_path):
    save_tensors(tmp_path, {"w": torch.ones(3)})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "vocab.json").write_text("{}")
    save_config(tmp_path, "toy", "toy-small", {"width": 3}, extra={"seed": 1})
    document = load_config(tmp_path, "toy")
    assert document["model_type"] == "toy-small" and document["config"] == {"width": 3}
    assert set(document["files"]) == {"model.safetensors", "sub/vocab.json"}
    with pytest.raises(ArtifactError, match="holds a 'toy' model, not genrec"):
        load_config(tmp_path, "genrec")
    (tmp_path / "sub" / "vocab.json").write_text('{"changed": 1}')
    with pytest.raises(ArtifactError, match="corrupt: sub/vocab.json"):
        load_config(tmp_path, "toy")


def test_pickled_files_are_refused_at_save(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "weights.pt")
    with pytest.raises(ArtifactError, match="pickled"):
        save_config(tmp_path, "toy", "toy", {})


def test_a_folder_of_the_older_format_asks_to_be_re_published(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "sasrec", "config": {}}))
    with pytest.raises(ArtifactError, match="re-publish"):
        SequentialRecommender.from_pretrained(tmp_path)
    with pytest.raises(ArtifactError, match="re-publish"):
        SequentialRecommender.from_pretrained(tmp_path / "nothing-here")


def test_serving_keeps_its_version_when_the_newest_is_damaged(tmp_path):
    settings = Settings(data_dir=tmp_path)
    registry = ModelRegistry.from_settings(settings)
    torch.manual_seed(0)
    model = build_recommender("sasrec", 6, TINY).eval()
    for name in ("v1", "v2"):
        model.save_pretrained(tmp_path / name, np.arange(6) * 10)
        registry.add("seralm", tmp_path / name)
    weights = registry.latest("seralm").path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    holder = ModelHolder(settings, "seralm", lambda v: load_serving_model(v, settings))
    holder.version = registry.get("seralm", "v000001")
    holder.current = load_serving_model(holder.version, settings)

    assert asyncio.run(holder.refresh()) is False
    assert holder.version.version == "v000001"
    assert holder.current.version == "v000001"
