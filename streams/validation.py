"""What makes an event acceptable: shared by the producer SDK and the stream worker.

Each check returns a `Problem` (a short code for metrics and alerts, and a
sentence for the app team that sent the event) or None for a valid event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamrec.settings import StreamSettings
from streamrec.v1 import events_pb2

MAX_CONTEXT_ENTRIES = 16
MAX_CONTEXT_CHARS = 256
KNOWN_EVENT_TYPES = frozenset(
    value for value in events_pb2.EventType.values() if value != events_pb2.EVENT_TYPE_UNSPECIFIED
)


@dataclass(frozen=True)
class Problem:
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def interaction_problem(
    event: events_pb2.InteractionEvent, now_ms: int, settings: StreamSettings
) -> Problem | None:
    if not event.event_id:
        return Problem("missing_event_id", "missing event_id")
    if event.user_id <= 0:
        return Problem("bad_user_id", f"user_id must be positive, got {event.user_id}")
    if event.item_id <= 0:
        return Problem("bad_item_id", f"item_id must be positive, got {event.item_id}")
    if event.event_type not in KNOWN_EVENT_TYPES:
        return Problem("unknown_event_type", f"unknown event_type {event.event_type}")
    if event.HasField("value") and not math.isfinite(event.value):
        return Problem("bad_value", f"value must be a finite number, got {event.value}")
    return _timestamp_problem(event.timestamp_ms, now_ms, settings) or _context_problem(
        event.context
    )


def item_problem(
    event: events_pb2.ItemEvent, now_ms: int, settings: StreamSettings
) -> Problem | None:
    if not event.event_id:
        return Problem("missing_event_id", "missing event_id")
    if event.item_id <= 0:
        return Problem("bad_item_id", f"item_id must be positive, got {event.item_id}")
    if not event.deleted and not event.title:
        return Problem("missing_title", "missing title")
    return _timestamp_problem(event.timestamp_ms, now_ms, settings)


def _timestamp_problem(timestamp_ms: int, now_ms: int, settings: StreamSettings) -> Problem | None:
    if timestamp_ms <= 0:
        return Problem("bad_timestamp", f"timestamp_ms must be positive, got {timestamp_ms}")
    skew_ms = settings.max_clock_skew_s * 1000
    if timestamp_ms > now_ms + skew_ms:
        return Problem(
            "future_timestamp",
            f"timestamp_ms {timestamp_ms} is more than {settings.max_clock_skew_s}s in the future",
        )
    max_age_ms = settings.max_event_age_s * 1000
    if timestamp_ms < now_ms - max_age_ms:
        return Problem(
            "old_timestamp",
            f"timestamp_ms {timestamp_ms} is more than {settings.max_event_age_s}s in the past",
        )
    return None


def _context_problem(context) -> Problem | None:
    if len(context) > MAX_CONTEXT_ENTRIES:
        return Problem(
            "bad_context",
            f"context has {len(context)} entries, at most {MAX_CONTEXT_ENTRIES} allowed",
        )
    for key, value in context.items():
        if len(key) + len(value) > MAX_CONTEXT_CHARS:
            return Problem(
                "bad_context",
                f"context entry {key!r} is longer than {MAX_CONTEXT_CHARS} characters",
            )
    return None
