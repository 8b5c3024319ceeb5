"""Datasets: fetched once, loaded with RecBole's ids and RecBole's sequential splits.

`load_dataset(name)` returns a `Dataset`: users and items with their features,
interactions in time order, and train/valid/test examples made exactly as
RecBole's sequential leave-one-out protocol makes them (see `splits`).

Ids follow RecBole: raw ids are remapped to inner ids 1..N in order of first
appearance in the interaction file (`pandas.factorize` + 1); 0 is padding, so
embedding tables need `num_items + 1` rows. `item_raw_ids[inner]` and
`item_inner_ids[raw]` map both ways (likewise for users).

RecBole filters nothing for ml-100k by default: its ml-100k config leaves
`rm_dup_inter`, `val_interval` and `user/item_inter_num_interval` unset, and
`filter_inter_by_user_or_item` has nothing to filter by because only the .inter
columns are loaded. Neither does this: every interaction is kept, repeats
included, and items and users get features only where the files have them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from streamrec.datasets.fetch import KNOWN_DATASETS, dataset_folder, fetch_dataset, find_layout
from streamrec.datasets.loaders import RawData, load_amazon, load_atomic, load_ml1m, load_ml20m
from streamrec.datasets.splits import (
    RECBOLE_NORMALISED_TIME,
    Split,
    leave_one_out,
    recbole_time_key,
)
from streamrec.settings import Settings, get_settings

__all__ = [
    "KNOWN_DATASETS",
    "Dataset",
    "Interaction",
    "Item",
    "Split",
    "User",
    "dataset_folder",
    "fetch_dataset",
    "first_interactions",
    "load_dataset",
]

PAD = "[PAD]"  # the raw id of inner id 0, as RecBole names it


@dataclass(frozen=True)
class Item:
    inner_id: int
    raw_id: str
    title: str
    year: int | None
    genres: list[str]

    @property
    def external_id(self) -> int:
        """The id used on the wire: the raw id when numeric (MovieLens), else the inner id."""
        return int(self.raw_id) if self.raw_id.isdigit() else self.inner_id


@dataclass(frozen=True)
class User:
    inner_id: int
    raw_id: str
    age: int | None
    gender: str | None
    occupation: str | None

    @property
    def external_id(self) -> int:
        """The id used on the wire, chosen as for items."""
        return int(self.raw_id) if self.raw_id.isdigit() else self.inner_id


@dataclass(frozen=True)
class Interaction:
    """One interaction with wire ids (see `Item.external_id`)."""

    user_id: int
    item_id: int
    rating: float | None
    timestamp: int  # seconds


@dataclass
class Dataset:
    name: str
    users: dict[int, User]  # inner id -> user
    items: dict[int, Item]  # inner id -> item
    # Interactions in time order (stable: ties keep file order), inner ids.
    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray  # float32, NaN where the dataset has none
    timestamps: np.ndarray  # int64 seconds
    splits: dict[str, Split]  # "train", "valid", "test"
    user_raw_ids: list[str]  # inner id -> raw id; [0] is "[PAD]"
    item_raw_ids: list[str]
    user_inner_ids: dict[str, int]  # raw id -> inner id
    item_inner_ids: dict[str, int]
    reviews: dict[tuple[int, int], str] = field(default_factory=dict)  # (user, item) inner ids

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return len(self.item_ids)

    def interaction_records(self) -> list[Interaction]:
        """Interactions in time order with wire ids, for replay into Kafka."""
        user_ids = {inner: user.external_id for inner, user in self.users.items()}
        item_ids = {inner: item.external_id for inner, item in self.items.items()}
        return [
            Interaction(user_ids[u], item_ids[i], None if np.isnan(r) else float(r), int(t))
            for u, i, r, t in zip(
                self.user_ids.tolist(),
                self.item_ids.tolist(),
                self.ratings.tolist(),
                self.timestamps.tolist(),
                strict=True,
            )
        ]


_READERS = {
    "atomic": load_atomic,
    "ml-1m": lambda folder, name: load_ml1m(folder),
    "ml-20m": lambda folder, name: load_ml20m(folder),
    "amazon": lambda folder, name: load_amazon(folder),
}


def _factorize(tokens: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Inner ids 1..N in order of first appearance, and the raw id of each ([0] is padding)."""
    uniques, first, inverse = np.unique(tokens, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first)
    inner = np.empty(len(uniques), dtype=np.int64)
    inner[by_appearance] = np.arange(1, len(uniques) + 1)
    return inner[inverse.reshape(-1)], [PAD, *uniques[by_appearance].tolist()]


def load_dataset(
    name: str, settings: Settings | None = None, max_seq_length: int | None = None
) -> Dataset:
    """Load a dataset (fetching it when needed) with RecBole's inner ids, time order and splits.

    `max_seq_length` defaults to `settings.assets.max_item_list_length` (RecBole's 50).
    """
    settings = settings or get_settings()
    max_seq_length = max_seq_length or settings.assets.max_item_list_length
    folder = fetch_dataset(name, settings)
    raw: RawData = _READERS[find_layout(folder, name)](folder, name)
    if len(raw.user_ids) == 0:
        raise ValueError(f"{name}: no interactions in {folder}")

    users, user_raw_ids = _factorize(raw.user_ids)
    items, item_raw_ids = _factorize(raw.item_ids)
    user_inner_ids = {raw_id: inner for inner, raw_id in enumerate(user_raw_ids) if inner}
    item_inner_ids = {raw_id: inner for inner, raw_id in enumerate(item_raw_ids) if inner}
    time_key = recbole_time_key(raw.timestamps, normalised=name in RECBOLE_NORMALISED_TIME)
    order = np.argsort(raw.timestamps, kind="stable")

    no_item = {"title": "", "year": None, "genres": []}
    no_user = {"age": None, "gender": None, "occupation": None}
    return Dataset(
        name=name,
        users={
            inner: User(inner, raw_id, **raw.users.get(raw_id, no_user))
            for raw_id, inner in user_inner_ids.items()
        },
        items={
            inner: Item(inner, raw_id, **raw.items.get(raw_id, no_item))
            for raw_id, inner in item_inner_ids.items()
        },
        user_ids=users[order],
        item_ids=items[order],
        ratings=raw.ratings[order],
        timestamps=raw.timestamps[order],
        splits=leave_one_out(users, items, time_key, max_seq_length),
        user_raw_ids=user_raw_ids,
        item_raw_ids=item_raw_ids,
        user_inner_ids=user_inner_ids,
        item_inner_ids=item_inner_ids,
        reviews={
            (user_inner_ids[u], item_inner_ids[i]): text for (u, i), text in raw.reviews.items()
        },
    )


def first_interactions(dataset: Dataset, count: int) -> Dataset:
    """The dataset as it stood after its first `count` interactions in time order: only
    the users and items seen by then (inner ids renumbered in order of first appearance),
    and leave-one-out splits over those interactions, in the dataset's time order. What a
    model trained "on the events so far" trains on (`bench/online.py`)."""
    if not 0 < count <= dataset.num_interactions:
        raise ValueError(f"count must be in 1..{dataset.num_interactions}, got {count}")
    old_users, old_items = dataset.user_ids[:count], dataset.item_ids[:count]
    users, user_order = _factorize(old_users)
    items, item_order = _factorize(old_items)
    max_seq_length = dataset.splits["train"].histories.shape[1]
    time_order = np.arange(count, dtype=np.float64)
    user_order, item_order = user_order[1:], item_order[1:]  # without padding
    user_raw_ids = [PAD, *(dataset.user_raw_ids[old] for old in user_order)]
    item_raw_ids = [PAD, *(dataset.item_raw_ids[old] for old in item_order)]
    new_user = {old: new for new, old in enumerate(user_order, start=1)}
    new_item = {old: new for new, old in enumerate(item_order, start=1)}
    return dataclasses.replace(
        dataset,
        users={
            new: dataclasses.replace(dataset.users[old], inner_id=new)
            for old, new in new_user.items()
        },
        items={
            new: dataclasses.replace(dataset.items[old], inner_id=new)
            for old, new in new_item.items()
        },
        user_ids=users,
        item_ids=items,
        ratings=dataset.ratings[:count],
        timestamps=dataset.timestamps[:count],
        splits=leave_one_out(users, items, time_order, max_seq_length),
        user_raw_ids=user_raw_ids,
        item_raw_ids=item_raw_ids,
        user_inner_ids={raw_id: inner for inner, raw_id in enumerate(user_raw_ids) if inner},
        item_inner_ids={raw_id: inner for inner, raw_id in enumerate(item_raw_ids) if inner},
        reviews={
            (new_user[u], new_item[i]): text
            for (u, i), text in dataset.reviews.items()
            if u in new_user and i in new_item
        },
    )
