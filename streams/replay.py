"""Replay a dataset into Kafka as live events: its items first, then its interactions in time order.

Events are stamped with the time they are sent, so the stream plane sees them
as live traffic (a 1997 timestamp would be refused as too old); the dataset's
own timestamp travels in the event's context as `source_ts`. Event ids are
the dataset name and the event's position in time order, so replaying the
same dataset twice produces the same ids and the stores keep one row each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamrec.datasets import Interaction, load_dataset
from streamrec.settings import Settings
from streamrec.v1 import events_pb2
from streams.producer import InteractionProducer, ItemProducer, now_ms


@dataclass
class ReplaySummary:
    dataset: str
    topic: str
    items: int
    interactions: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.interactions / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return (
            f"replayed {self.dataset}: {self.items:,} items and {self.interactions:,} interactions "
            f"to '{self.topic}' in {self.seconds:.1f}s ({self.events_per_s:,.0f} events/s)"
        )


class _Pacer:
    """Sleeps so that sends follow a fixed rate or the dataset's own gaps sped up."""

    def __init__(self, rate: float | None, speedup: float | None, first_source_ts: int):
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if speedup is not None and speedup <= 0:
            raise ValueError(f"speedup must be positive, got {speedup}")
        self.rate, self.speedup, self.t0 = rate, speedup, first_source_ts
        self.start = time.perf_counter()

    def wait(self, index: int, source_ts: int) -> None:
        if self.rate:
            due = index / self.rate
        elif self.speedup:
            due = (source_ts - self.t0) / self.speedup
        else:
            return
        delay = self.start + due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )


def replayed_event(
    name: str, index: int, record: Interaction, timestamp_ms: int
) -> events_pb2.InteractionEvent:
    """Interaction `index` (in time order) of dataset `name` as a live event sent at
    `timestamp_ms`: a rating when it has one, else a view; its own time in the context."""
    event = events_pb2.InteractionEvent(
        event_id=f"{name}:{index}",
        user_id=record.user_id,
        item_id=record.item_id,
        event_type=events_pb2.EVENT_TYPE_RATING
        if record.rating is not None
        else events_pb2.EVENT_TYPE_VIEW,
        timestamp_ms=timestamp_ms,
        context={"source": name, "source_ts": str(record.timestamp)},
    )
    if record.rating is not None:
        event.value = record.rating
    return event


def replay_dataset(
    settings: Settings,
    name: str,
    rate: float | None = None,
    speedup: float | None = None,
    limit: int | None = None,
    show_progress: bool = True,
) -> ReplaySummary:
    """Send the items, then up to `limit` interactions; returns once all are acknowledged."""
    dataset = load_dataset(name, settings)
    records = dataset.interaction_records()
    if limit is not None:
        records = records[:limit]
    started = time.perf_counter()
    with (
        ItemProducer.from_settings(settings) as items,
        InteractionProducer.from_settings(settings) as interactions,
        _progress() as progress,
    ):
        progress.disable = not show_progress
        item_task = progress.add_task("items", total=len(dataset.items), rate="")
        for item in dataset.items.values():
            items.send(
                item_id=item.external_id,
                title=item.title,
                year=item.year or 0,
                categories=item.genres,
                event_id=f"{name}:item:{item.external_id}",
            )
            progress.advance(item_task)
        items.flush()

        pacer = _Pacer(rate, speedup, records[0].timestamp if records else 0)
        task = progress.add_task("interactions", total=len(records), rate="")
        last_ms = 0
        for index, record in enumerate(records):
            pacer.wait(index, record.timestamp)
            last_ms = max(last_ms, now_ms())
            interactions.send_event(replayed_event(name, index, record, last_ms))
            if index % 1000 == 999:
                elapsed = time.perf_counter() - started
                progress.update(task, advance=1000, rate=f"{(index + 1) / elapsed:,.0f}/s")
        interactions.flush()
        progress.update(task, completed=len(records))
    return ReplaySummary(
        dataset=name,
        topic=settings.kafka.interactions_topic,
        items=len(dataset.items),
        interactions=len(records),
        seconds=time.perf_counter() - started,
    )


def stored_interactions(settings: Settings, name: str) -> int:
    """How many of this dataset's replayed interactions ClickHouse holds (by their event ids)."""
    from streamrec.db import connect

    client = connect(settings)
    try:
        query = "SELECT count() FROM interactions FINAL WHERE event_id LIKE %(prefix)s"
        return client.execute(query, {"prefix": f"{name}:%"})[0][0]
    finally:
        client.disconnect()
