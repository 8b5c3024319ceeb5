"""A first `seralm` version for a fresh install: a SASRec trained for a few epochs.

`streamrec up` and the serving benchmark need something to serve before any
training worker or alignment run has published. This trains the plain ID
model (no knowledge yet) on the dataset's training split with the full
softmax, and publishes it like any other version; the online trainer and the
alignment job replace it later.
"""

from __future__ import annotations

import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch
from rich.progress import Progress

from streamrec.registry import ModelVersion, VersionMetadata, publish
from streamrec.settings import Settings


def last_windows(train, max_users: int = 0):
    """Each user's last training window with the next item at every position, for the
    all-positions objective: one row per user trains what the user's many prefix
    examples would (within the window), at a fraction of the cost."""
    users = np.asarray(train.users)
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True])  # rows grouped by user
    if max_users:
        last = last[:max_users]
    histories = np.asarray(train.histories)[last]
    lengths = np.asarray(train.lengths)[last]
    targets = np.zeros_like(histories)
    targets[:, :-1] = histories[:, 1:]
    rows = np.arange(len(last))
    targets[rows, lengths - 1] = np.asarray(train.targets)[last]
    targets[np.arange(histories.shape[1])[None, :] >= lengths[:, None]] = 0
    return torch.as_tensor(histories), torch.as_tensor(lengths), torch.as_tensor(targets)


def train_first_model(
    settings: Settings,
    dataset_name: str,
    epochs: int,
    config: dict | None = None,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    max_users: int = 0,
) -> ModelVersion:
    """Train a SASRec on `dataset_name`'s training split for `epochs` (on the first
    `max_users` users when that is not 0); publish it as `seralm`."""
    from models.sequential import build_recommender
    from serving.recommender import set_torch_threads
    from streamrec.datasets import load_dataset

    set_torch_threads(settings)  # on busy shared cores, one thread trains 8x faster than two
    dataset = load_dataset(dataset_name, settings)
    train = dataset.splits["train"]
    n_items = dataset.num_items + 1
    torch.manual_seed(0)
    model = build_recommender("sasrec", n_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    histories, lengths, targets = last_windows(train, max_users)
    steps = (len(targets) + batch_size - 1) // batch_size
    started = time.perf_counter()
    model.train()
    losses: list[float] = []
    with Progress(transient=True) as progress:
        task = progress.add_task(f"SASRec on {dataset_name}", total=epochs * steps)
        for _ in range(epochs):
            order = torch.randperm(len(targets))
            losses = []
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                optimizer.zero_grad()
                loss = model.loss(histories[batch], lengths[batch], targets[batch])
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                progress.advance(task)
    item_ids = np.array(
        [0] + [dataset.items[i].external_id for i in range(1, n_items)], dtype=np.int64
    )
    with TemporaryDirectory(prefix="streamrec-first-model-") as folder:
        model.eval().save_pretrained(Path(folder), item_ids, extra={"dataset": dataset_name})
        return publish(
            settings,
            settings.recommender.family,
            Path(folder),
            VersionMetadata(
                metrics={"train_loss": float(np.mean(losses)) if losses else None},
                extra={
                    "source": "first-model",
                    "dataset": dataset_name,
                    "epochs": epochs,
                    "users": len(targets),
                    "train_seconds": round(time.perf_counter() - started, 1),
                },
            ),
        )
