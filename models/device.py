"""The one reading of a `device` and a `dtype` setting, for every job and server."""

from __future__ import annotations

import torch


def resolve_device(choice: str | torch.device = "auto") -> torch.device:
    """ "auto": cuda when there is one, else cpu; anything else as torch names it
    ("cpu", "cuda", "cuda:1", ...). Settings say "auto" by default, so a GPU is used
    wherever one is present without anybody asking for it."""
    if isinstance(choice, torch.device):
        return choice
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto": bfloat16 on an accelerator, float32 on a CPU (where bf16 matmuls are slow
    on most machines and the losses would only get noisier); else the named dtype."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
