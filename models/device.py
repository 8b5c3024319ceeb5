"""The one reading of a `device` setting, for every job and server."""

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
