"""Producer SDK for apps: validated, protobuf-encoded events to Kafka.

    from streams.producer import InteractionProducer
    with InteractionProducer.from_settings() as producer:
        producer.send(user_id=42, item_id=1337, event_type="click")

Keys are the user id (interactions) and the item id (items), so one user's
events stay in order on one partition. acks=all with retries, so a send that
returned without error is durable once `flush()` returns.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence

from kafka import KafkaProducer

from streamrec.services import kafka_bootstrap
from streamrec.settings import Settings, get_settings
from streamrec.v1 import events_pb2
from streams.validation import interaction_problem, item_problem


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_event_type(event_type: str | int) -> int:
    """Accept 'click', 'EVENT_TYPE_CLICK' or the enum number."""
    if isinstance(event_type, int):
        return event_type
    name = event_type.upper()
    if not name.startswith("EVENT_TYPE_"):
        name = "EVENT_TYPE_" + name
    try:
        return events_pb2.EventType.Value(name)
    except ValueError:
        known = ", ".join(
            n.removeprefix("EVENT_TYPE_").lower()
            for n in events_pb2.EventType.keys()
            if n != "EVENT_TYPE_UNSPECIFIED"
        )
        raise ValueError(f"unknown event_type {event_type!r}; known: {known}") from None


class _Producer:
    topic_attr = ""

    def __init__(self, settings: Settings, **overrides):
        self.settings = settings
        self.topic = getattr(settings.kafka, self.topic_attr)
        k = settings.kafka
        config = dict(
            bootstrap_servers=kafka_bootstrap(settings),
            acks="all",
            retries=k.send_retries,
            linger_ms=k.linger_ms,
            batch_size=k.batch_size,
            compression_type=k.compression_type or None,
            max_in_flight_requests_per_connection=1,
        )
        config.update(overrides)
        self._kafka = KafkaProducer(**config)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides):
        return cls(settings or get_settings(), **overrides)

    def _send(self, key: int, event) -> None:
        self._kafka.send(self.topic, key=str(key).encode(), value=event.SerializeToString())

    def flush(self, timeout: float | None = None) -> None:
        self._kafka.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self._kafka.flush(timeout)
        self._kafka.close(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InteractionProducer(_Producer):
    """Sends `InteractionEvent`s to the interactions topic, keyed by user id."""

    topic_attr = "interactions_topic"

    def send(
        self,
        user_id: int,
        item_id: int,
        event_type: str | int = "view",
        value: float | None = None,
        timestamp_ms: int | None = None,
        context: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> events_pb2.InteractionEvent:
        event = events_pb2.InteractionEvent(
            event_id=event_id or uuid.uuid4().hex,
            user_id=user_id,
            item_id=item_id,
            event_type=parse_event_type(event_type),
            timestamp_ms=now_ms() if timestamp_ms is None else timestamp_ms,
            context=dict(context or {}),
        )
        if value is not None:
            event.value = value
        return self.send_event(event)

    def send_event(self, event: events_pb2.InteractionEvent) -> events_pb2.InteractionEvent:
        problem = interaction_problem(event, now_ms(), self.settings.streams)
        if problem:
            raise ValueError(f"invalid interaction event: {problem}")
        self._send(event.user_id, event)
        return event


class ItemProducer(_Producer):
    """Sends `ItemEvent`s (catalog changes) to the items topic, keyed by item id."""

    topic_attr = "items_topic"

    def send(
        self,
        item_id: int,
        title: str,
        year: int = 0,
        categories: Sequence[str] = (),
        description: str = "",
        attributes: Mapping[str, str] | None = None,
        deleted: bool = False,
        timestamp_ms: int | None = None,
        event_id: str | None = None,
    ) -> events_pb2.ItemEvent:
        event = events_pb2.ItemEvent(
            event_id=event_id or uuid.uuid4().hex,
            item_id=item_id,
            title=title,
            year=year,
            categories=list(categories),
            description=description,
            attributes=dict(attributes or {}),
            deleted=deleted,
            timestamp_ms=now_ms() if timestamp_ms is None else timestamp_ms,
        )
        return self.send_event(event)

    def send_event(self, event: events_pb2.ItemEvent) -> events_pb2.ItemEvent:
        problem = item_problem(event, now_ms(), self.settings.streams)
        if problem:
            raise ValueError(f"invalid item event: {problem}")
        self._send(event.item_id, event)
        return event
