"""Static group membership for stream workers: a restarted worker takes back its
partitions at once.

A worker that dies without leaving its consumer group (kill -9, a crash, a node
lost) holds its partitions until `streams.session_timeout_s` has passed, and a
dynamic member restarted in its place waits that long before it writes again.
A static member (Kafka's `group.instance.id`) is recognised when it comes back
under the same id, and the broker hands it its partitions without waiting.

The id must be stable across restarts and unique among running workers. Each
worker takes the first free slot under its data directory (a lock the kernel
releases when the process dies, however it dies), so a restarted worker gets
the id its predecessor had, and two workers on one machine get two ids.
"""

from __future__ import annotations

import fcntl
import socket
from pathlib import Path
from typing import IO

_held: list[IO] = []  # the slot's lock lives as long as the process


def claim_instance_id(app_id: str, folder: Path, slots: int = 64) -> str:
    """`<app_id>-<host>-<slot>`, for the first slot under `folder` no live worker holds."""
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        lock = open(folder / f"member-{slot}.lock", "a")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held.append(lock)
        return f"{app_id}-{socket.gethostname()}-{slot}"
    raise RuntimeError(f"all {slots} worker slots under {folder} are taken")
