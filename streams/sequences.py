"""Per-user sequences: the last N interactions of a user, updated exactly once per event.

A sequence is kept in event time, like `HistoryStore` reads it (timestamp, then
source offset): a late event is placed by its timestamp, and its training
example's history is the items before it in time.

A sequence is a plain dict, ``{"items": [...], "ts": [...], "ids": [...],
"offset": int}``, kept in a changelog-backed faust table as the compact bytes of
`encode` (one changelog message per user per batch, so its size and encoding
cost count). An event is applied at most once, for two reasons it could arrive
again:

- redelivery after a crash (the table's changelog is ahead of the committed
  Kafka offset): one user's events all live on one partition, so an event at
  or below the last applied source offset has been applied already;
- the same event sent twice by an app (a new offset, the same event_id): the
  event ids of the window are kept and checked.
"""

from __future__ import annotations

import json
from bisect import bisect_right

from streamrec.v1 import events_pb2


def empty_sequence() -> dict:
    return {"items": [], "ts": [], "ids": [], "offset": -1}


def encode(sequence: dict) -> bytes:
    """The table's bytes for a sequence: JSON lists, no keys, no spaces."""
    value = [sequence["offset"], sequence["items"], sequence["ts"], sequence["ids"]]
    return json.dumps(value, separators=(",", ":")).encode()


def decode(data: bytes | None) -> dict | None:
    if data is None:
        return None
    offset, items, stamps, ids = json.loads(data)
    return {"items": items, "ts": stamps, "ids": ids, "offset": offset}


def apply_events(
    sequence: dict | None,
    events: list[tuple[int, events_pb2.InteractionEvent]],
    max_length: int,
    examples=None,
) -> tuple[dict, object]:
    """Place (source offset, event) pairs, given in offset order, by their timestamps;
    returns the new sequence and `examples` with one training example (history before
    the event in time -> the event's item) added per applied event that had a history.

    `examples` is anything with protobuf's repeated-field `add(**fields)` (by default a
    new list of them): the worker adds straight into the messages it sends, so that no
    example is built twice."""
    sequence = dict(sequence or empty_sequence())
    if examples is None:
        examples = events_pb2.TrainingExampleBatch().examples
    items, stamps, ids = list(sequence["items"]), list(sequence["ts"]), list(sequence["ids"])
    last_offset = sequence["offset"]
    for offset, event in events:
        if offset <= last_offset or event.event_id in ids:
            continue
        last_offset = offset
        # After every earlier-or-equal timestamp: ties keep arrival (offset) order.
        at = bisect_right(stamps, event.timestamp_ms)
        if at:
            examples.add(
                event_id=event.event_id,
                user_id=event.user_id,
                history=items[:at],
                history_timestamps_ms=stamps[:at],
                target_item_id=event.item_id,
                timestamp_ms=event.timestamp_ms,
            )
        items = (items[:at] + [event.item_id] + items[at:])[-max_length:]
        stamps = (stamps[:at] + [event.timestamp_ms] + stamps[at:])[-max_length:]
        ids = (ids[:at] + [event.event_id] + ids[at:])[-max_length:]
    return {"items": items, "ts": stamps, "ids": ids, "offset": last_offset}, examples
