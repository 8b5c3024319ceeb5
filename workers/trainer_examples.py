"""The online trainer's examples: a poll's records decoded in one pass, item ids mapped
to model indices as arrays, and micro-batches packed into one sequence per user.

Packing is what lets one CPU core keep up with the stream. The stream worker writes one
example per event: the user's history before it and the event's item. A user's
consecutive examples overlap: each history is the previous history and target (and any
events between them, such as a held-out one). One causal forward over the newest
history trains every target in it (the all-positions objective of offline training), so
the examples of one user in a micro-batch cost one sequence, not one each: in ml-100k's
time order a micro-batch of 256 examples holds about a dozen users. Each packed target
sees the window's items before it, a suffix of its own history (all of it while the
histories are shorter than the window), as in offline training.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from google.protobuf.message import DecodeError

from streamrec.v1 import events_pb2

# Events (held out, or from the same user's earlier message) a continuation may skip.
MAX_GAP = 4


@dataclass
class Example:
    """One training example in the model's item indices (0 is padding)."""

    history: list[int]
    target: int
    user: int = 0


@dataclass
class WireExamples:
    """A poll's examples with their wire ids, as arrays: example n's history is
    `items[starts[n]:starts[n + 1]]`."""

    event_ids: list[str] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    items: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)

    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])


def decode_values(values: list[bytes]) -> tuple[WireExamples, list[int]]:
    """Every TrainingExampleBatch among `values` in one pass; the positions of the values
    that are not one (skipped, so that their partitions move on)."""
    wire, undecodable = WireExamples(), []
    for position, value in enumerate(values):
        try:
            batch = events_pb2.TrainingExampleBatch.FromString(value)
        except DecodeError:
            undecodable.append(position)
            continue
        for example in batch.examples:
            history = example.history
            wire.event_ids.append(example.event_id)
            wire.users.append(example.user_id)
            wire.targets.append(example.target_item_id)
            wire.lengths.append(len(history))
            wire.items.extend(history)
    return wire, undecodable


class ItemIndex:
    """External item id -> model index for whole arrays at once (a sorted copy of the
    model's ids and a binary search), rebuilt when the model's item table changes."""

    def __init__(self, item_ids: np.ndarray):
        real = np.asarray(item_ids[1:], dtype=np.int64)  # index 0 is padding
        order = np.argsort(real, kind="stable")
        self.sorted_ids = real[order]
        self.indices = order.astype(np.int64) + 1

    def lookup(self, ids) -> np.ndarray:
        """The index of each id; -1 where the model has no such item."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.sorted_ids):
            return np.full(ids.shape, -1, dtype=np.int64)
        position = np.searchsorted(self.sorted_ids, ids).clip(max=len(self.sorted_ids) - 1)
        return np.where(self.sorted_ids[position] == ids, self.indices[position], -1)

    def unseen(self, ids) -> list[int]:
        """The distinct ids the model has no index for, in increasing order."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        return ids[self.lookup(ids) < 0].tolist()


def is_held_out(event_id: str, fraction: float) -> bool:
    """Stable over restarts and replicas: the same event is always on the same side."""
    return zlib.crc32(event_id.encode()) % 10_000 < fraction * 10_000


def continuation_gap(previous: Example, example: Example) -> int | None:
    """How many events came between `previous` and `example` when `example`'s history
    continues `previous`'s (its history and target, then up to MAX_GAP other events),
    else None."""
    full = [*previous.history, previous.target]
    history = example.history
    for gap in range(min(MAX_GAP + 1, len(history))):
        end = len(history) - gap
        compared = min(len(full), end)
        if history[end - compared : end] == full[-compared:]:
            return gap
    return None


@dataclass
class Chain:
    """Examples of one user trained as one sequence: the newest's history and target, each
    example's target `distance` items before the end."""

    examples: list[Example]
    distances: list[int]


def pack(examples: list[Example], max_len: int) -> list[Chain]:
    """`examples` (in stream order) as chains of one user's continuing examples, each
    within one window of `max_len` positions."""
    chains: list[Chain] = []
    open_chains: dict[int, Chain] = {}
    for example in examples:
        chain = open_chains.get(example.user)
        gap = None if chain is None else continuation_gap(chain.examples[-1], example)
        # The chain's first target must stay inside the newest example's window.
        if gap is not None and chain.distances[0] + gap + 1 < min(len(example.history), max_len):
            chain.distances = [distance + gap + 1 for distance in chain.distances] + [0]
            chain.examples.append(example)
            continue
        chain = Chain([example], [0])
        chains.append(chain)
        open_chains[example.user] = chain
    return chains


def replay_chains(replay, want: int, max_len: int, rng: random.Random) -> list[Chain]:
    """`want` older targets from the replay buffer: stored examples drawn at random, each
    with the newest targets of its own window (each of its history items is an earlier
    example of that user), so a replayed sequence trains up to `max_len` of them."""
    chains, found = [], 0
    while replay and found < want:
        example = replay[rng.randrange(len(replay))]
        reach = min(want - found, max_len, len(example.history))
        chains.append(Chain([example], list(range(reach))))
        found += reach
    return chains


def chain_tensors(chains: list[Chain], max_len: int, device: str):
    """Left-aligned, zero-padded windows [R, L], their lengths [R], and the all-positions
    targets [R, L] (0 where a position trains nothing)."""
    seqs = torch.zeros(len(chains), max_len, dtype=torch.long)
    lens = torch.zeros(len(chains), dtype=torch.long)
    targets = torch.zeros(len(chains), max_len, dtype=torch.long)
    for row, chain in enumerate(chains):
        last = chain.examples[-1]
        window = [*last.history, last.target][-(max_len + 1) :]
        inputs, n = window[:-1], len(window) - 1
        seqs[row, :n] = torch.tensor(inputs, dtype=torch.long)
        lens[row] = n
        for distance in chain.distances:
            targets[row, n - 1 - distance] = window[n - distance]
    return seqs.to(device), lens.to(device), targets.to(device)


def to_tensors(examples: list[Example], max_len: int, device: str):
    """Left-aligned, zero-padded histories (RecBole's layout), their lengths, the targets."""
    seqs = torch.zeros(len(examples), max_len, dtype=torch.long)
    lens = torch.zeros(len(examples), dtype=torch.long)
    for row, example in enumerate(examples):
        history = example.history[-max_len:]
        seqs[row, : len(history)] = torch.tensor(history, dtype=torch.long)
        lens[row] = len(history)
    targets = torch.tensor([e.target for e in examples], dtype=torch.long)
    return seqs.to(device), lens.to(device), targets.to(device)
