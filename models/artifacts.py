"""The folder every model family saves and loads (the unit the registry versions), in the
layout of Hugging Face's `save_pretrained`: a `config.json` and safetensors files.

`config.json` holds the family (`sequential`, `genrec`, `recsysllm`), the model type, the
model's config and its family's fields, and the SHA-256 of every other file the save wrote.
It is written last, so a folder without it is no artifact, and it is checked first, so a
missing, truncated or altered file is refused with an `ArtifactError` before anything is
built from it. Nothing is pickled: loading a folder runs no code from it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# The model-to-external id maps (item_ids, user_ids) as int64 tensors.
IDS_FILE = "ids.safetensors"
# Pickle-based formats: never part of an artifact.
PICKLED_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}


class ArtifactError(ValueError):
    """A folder that is not a loadable artifact of the family asked for."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_config(folder: Path, family: str, model_type: str, config: dict, **fields) -> Path:
    """Write `config.json` after every other file of the artifact is in `folder`."""
    folder = Path(folder)
    files = sorted(
        path for path in folder.rglob("*") if path.is_file() and path.name != CONFIG_FILE
    )
    pickled = [str(path.relative_to(folder)) for path in files if path.suffix in PICKLED_SUFFIXES]
    if pickled:
        raise ArtifactError(f"{folder}: pickled files are not part of an artifact: {pickled}")
    document = {
        "family": family,
        "model_type": model_type,
        "config": config,
        **fields,
        "files": {str(path.relative_to(folder)): _sha256(path) for path in files},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2))
    return folder


def load_config(folder: Path, family: str) -> dict:
    """`config.json` of a `family` artifact whose files are all present and intact."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{folder} is not a {family} artifact (no {CONFIG_FILE}); a folder saved before "
            "the safetensors artifacts must be re-published"
        )
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or "files" not in document:
        raise ArtifactError(
            f"{folder} was saved in an older format (no file list in {CONFIG_FILE}); re-publish it"
        )
    if document.get("family") != family:
        raise ArtifactError(f"{folder} holds a {document.get('family')!r} model, not {family}")
    for name, expected in document["files"].items():
        file = folder / name
        if not file.is_file():
            raise ArtifactError(f"{folder} is incomplete: {name} is missing")
        if _sha256(file) != expected:
            raise ArtifactError(f"{folder} is corrupt: {name} differs from what was saved")
    return document


def save_tensors(folder: Path, tensors: dict[str, torch.Tensor], name: str = WEIGHTS_FILE):
    """Plain tensors (no shared storage) as one safetensors file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in tensors.items()}
    save_file(state, str(folder / name))


def load_tensors(folder: Path, name: str = WEIGHTS_FILE, device: str = "cpu"):
    try:
        return load_file(str(Path(folder) / name), device=str(device))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"{Path(folder) / name} cannot be read: {error}") from error


def save_module(folder: Path, module: nn.Module, name: str = WEIGHTS_FILE) -> None:
    """A module's state dict, tied weights stored once (safetensors' `save_model`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(module, str(folder / name))


def load_module(folder: Path, module: nn.Module, name: str = WEIGHTS_FILE, device="cpu"):
    """Weights into `module`; a missing or unexpected key is an error (strict)."""
    try:
        load_model(module, str(Path(folder) / name), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ArtifactError(f"{Path(folder) / name} cannot be loaded: {error}") from error
