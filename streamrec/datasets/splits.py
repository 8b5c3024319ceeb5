"""RecBole's sequential leave-one-out protocol (`eval_args: {split: {LS: valid_and_test},
order: TO}`), reproduced example for example and row for row (checked against RecBole 1.2.1).

What RecBole does, and so what this does:

- each interaction after a user's first is an example: the up to
  MAX_ITEM_LIST_LENGTH items before it (left-aligned, 0-padded) -> it;
- per user, the last example is test and the one before it valid, when the
  user has that many: 2 examples give train + test, 1 gives train only;
- a user's interactions are ordered by the timestamp *as RecBole holds it*: a
  float32 tensor, min-max normalised first where RecBole's dataset config sets
  `normalize_all` (its ml-100k config does; its defaults for other datasets
  don't). float32 merges nearby seconds (about 1 s after normalisation, 64 s
  raw), and merged ones keep file order (RecBole's sorts are stable). On
  ml-100k, ordering by exact seconds instead would change 4 test and 5 valid
  targets and the histories of 37 test examples (user 167's test target is
  606, rated a second before 530 but later in the file);
- rows come grouped by user, users in the order of their first example in
  time, each user's examples in time order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Datasets whose RecBole config normalises float fields, the timestamp among them.
RECBOLE_NORMALISED_TIME = frozenset({"ml-100k"})
SPLITS = ("train", "valid", "test")


@dataclass
class Split:
    """Examples: a history of inner item ids (left-aligned, 0-padded) -> the next item."""

    users: np.ndarray  # (n,) inner user ids
    histories: np.ndarray  # (n, max_seq_length)
    lengths: np.ndarray  # (n,) items in each history, 1..max_seq_length
    targets: np.ndarray  # (n,) inner item ids

    def __len__(self) -> int:
        return len(self.targets)

    def rows(self) -> Iterator[tuple[int, np.ndarray, int, int]]:
        """(user, padded history, length, target) per example, ids as Python ints."""
        return zip(
            self.users.tolist(),
            self.histories,
            self.lengths.tolist(),
            self.targets.tolist(),
            strict=True,
        )

    def user_sequences(self) -> dict[int, list[int]]:
        """Each user's items in time order, rebuilt from the rows (grouped by user, in
        time order): the user's first row's history, then every row's target."""
        sequences: dict[int, list[int]] = {}
        for user, history, length, target in self.rows():
            if user not in sequences:
                sequences[user] = history[:length].tolist()
            sequences[user].append(target)
        return sequences


def recbole_time_key(timestamps: np.ndarray, normalised: bool) -> np.ndarray:
    """The timestamps as RecBole sorts by them: float32, optionally min-max normalised."""
    values = timestamps.astype(np.float64)
    if normalised:
        low, high = values.min(), values.max()
        values = np.ones_like(values) if high == low else (values - low) / (high - low)
    return values.astype(np.float32)


def leave_one_out(
    users: np.ndarray, items: np.ndarray, time_key: np.ndarray, max_seq_length: int
) -> dict[str, Split]:
    """Train, valid and test examples from interactions given in file order."""
    order = np.lexsort((time_key, users))  # by user, then time; stable, so ties keep file order
    users, items, time_key = users[order], items[order], time_key[order]
    count = len(users)
    is_start = np.r_[True, users[1:] != users[:-1]]
    starts = np.flatnonzero(is_start)
    sizes = np.diff(np.r_[starts, count])
    group = np.cumsum(is_start) - 1  # each position's user group

    # Users in the order of their first example's time (their second interaction), ties by id.
    has_examples = sizes > 1
    first_time = np.where(has_examples, time_key[np.minimum(starts + 1, count - 1)], np.inf)
    group_rank = np.empty(len(starts), dtype=np.int64)
    group_rank[np.lexsort((users[starts], first_time))] = np.arange(len(starts))

    positions = np.flatnonzero(~is_start)
    positions = positions[np.lexsort((positions, group_rank[group[positions]]))]
    group_of = group[positions]
    examples = sizes[group_of] - 1
    from_end = starts[group_of] + sizes[group_of] - 1 - positions  # 0: the user's last
    part = np.zeros(len(positions), dtype=np.int8)  # 0 train, 1 valid, 2 test
    part[(from_end == 0) & (examples >= 2)] = 2
    part[(from_end == 1) & (examples >= 3)] = 1

    first = np.maximum(starts[group_of], positions - max_seq_length)
    lengths = positions - first
    offsets = np.arange(max_seq_length)
    window = np.minimum(first[:, None] + offsets, count - 1)  # past-the-end slots are masked
    histories = np.where(offsets < lengths[:, None], items[window], 0)

    return {
        name: Split(
            users=users[positions[part == index]],
            histories=histories[part == index],
            lengths=lengths[part == index],
            targets=items[positions[part == index]],
        )
        for index, name in enumerate(SPLITS)
    }
