"""The one reading of a `device` and a `dtype` setting, for every job and server."""

from __future__ import annotations

import os

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


def free_cpu_threads() -> int:
    """The cores the 1-minute load average leaves free, at least one: with more torch threads
    than free cores, every small operation waits at a barrier for a descheduled thread."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, round((cores or 1) - os.getloadavg()[0])))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """ "auto": bfloat16 on an accelerator, float32 on a CPU (where bf16 matmuls are slow
    on most machines and the losses would only get noisier); else the named dtype."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
