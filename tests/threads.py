"""One torch thread for the tests' tiny models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Small models on a shared machine: with two threads, every one of the many tiny ops
    waits at a barrier for a thread the busy cores have descheduled (20x slower here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
