"""The checkpoint folder, the unit the model registry versions:

config.json        {"model", "config", "n_items", "knowledge_dim", ...extra}
weights.safetensors  the state dict (without the knowledge table)
item_ids.npy       int64 external item id per index (index 0 = padding holds 0)
knowledge.npy      float32 [n_items, K], when the model uses knowledge

A model trained with its text encoder in the loop is saved in the pre-encoded form
serving uses: the fine-tuned encoder's vectors go to knowledge.npy, the encoder stays out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.sequential import build_recommender
from models.sequential.base import SequentialRecommender

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
ITEM_IDS_FILE = "item_ids.npy"
KNOWLEDGE_FILE = "knowledge.npy"


@dataclass
class LoadedRecommender:
    model: SequentialRecommender
    item_ids: np.ndarray
    extra: dict


def save_recommender(
    model: SequentialRecommender,
    folder: Path | str,
    item_ids: np.ndarray,
    extra: dict | None = None,
) -> Path:
    folder = Path(folder)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if len(item_ids) != model.n_items:
        raise ValueError(f"{len(item_ids)} item ids for a model of {model.n_items} items")
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
        if not name.startswith("fusion.text.")
    }
    save_file(state, str(folder / WEIGHTS_FILE))
    np.save(folder / ITEM_IDS_FILE, item_ids)
    with torch.no_grad():
        table = model.fusion.knowledge_table()
    if table is not None:
        np.save(folder / KNOWLEDGE_FILE, table.detach().float().cpu().numpy())
    reserved = {"model", "config", "n_items", "knowledge_dim"}
    clash = reserved & set(extra or {})
    if clash:
        raise ValueError(f"extra may not set {', '.join(sorted(clash))}")
    config = {
        "model": model.name,
        "config": model.config.to_dict(),
        "n_items": model.n_items,
        "knowledge_dim": model.knowledge_dim,
        **(extra or {}),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return folder


def load_recommender(folder: Path | str, device: str = "cpu") -> LoadedRecommender:
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a recommender checkpoint (no {CONFIG_FILE})")
    config = json.loads((folder / CONFIG_FILE).read_text())
    knowledge = None
    if config.get("knowledge_dim"):
        knowledge = torch.from_numpy(np.load(folder / KNOWLEDGE_FILE).astype(np.float32))
    model = build_recommender(config["model"], config["n_items"], config["config"], knowledge)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    extra = {
        key: value
        for key, value in config.items()
        if key not in ("model", "config", "n_items", "knowledge_dim")
    }
    item_ids = np.load(folder / ITEM_IDS_FILE).astype(np.int64)
    return LoadedRecommender(model.to(device).eval(), item_ids, extra)
