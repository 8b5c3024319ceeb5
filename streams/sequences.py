"""Per-user sequences: the last N interactions of a user, updated exactly once per event.

A sequence is kept in event time, like `HistoryStore` reads it (timestamp, then
source offset): a late event is placed by its timestamp, and its training
example's history is the items before it in time.

A sequence is a plain dict, ``{"items": [...], "ts": [...], "offset": int}``,
kept in a changelog-backed faust table as the bytes of `encode`: two packed int64
arrays behind a small header (one changelog message per user per batch, so its size
and encoding cost count; JSON cost the worker a tenth of its time). An event is
applied at most once, for two reasons it could arrive again:

- redelivery after a crash (the table's changelog is ahead of the committed
  Kafka offset): one user's events all live on one partition, so an event at
  or below the last applied source offset has been applied already;
- the same event sent twice by an app (a new offset, the same event_id): the
  stream worker drops it before it gets here (streams/identity.py).
"""

from __future__ import annotations

import json
import struct
from array import array
from bisect import bisect_right

from streamrec.v1 import events_pb2

# Format byte, source offset, length; then the items and the timestamps as int64.
_HEADER = struct.Struct("<Bqi")
_FORMAT = 2


def empty_sequence() -> dict:
    return {"items": [], "ts": [], "offset": -1}


def encode(sequence: dict) -> bytes:
    """The table's bytes for a sequence."""
    items, stamps = sequence["items"], sequence["ts"]
    header = _HEADER.pack(_FORMAT, sequence["offset"], len(items))
    return header + array("q", items).tobytes() + array("q", stamps).tobytes()


def decode(data: bytes | None) -> dict | None:
    if data is None:
        return None
    if data[:1] == b"[":  # a changelog written before format 2: JSON, with event ids
        offset, items, stamps, _ = json.loads(data)
        return {"items": items, "ts": stamps, "offset": offset}
    _, offset, length = _HEADER.unpack_from(data)
    values = array("q")
    values.frombytes(data[_HEADER.size :])
    return {"items": values[:length].tolist(), "ts": values[length:].tolist(), "offset": offset}


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
    sequence = sequence or empty_sequence()
    if examples is None:
        examples = events_pb2.TrainingExampleBatch().examples
    items, stamps = list(sequence["items"]), list(sequence["ts"])
    last_offset = sequence["offset"]
    for offset, event in events:
        if offset <= last_offset:
            continue
        last_offset = offset
        # After every earlier-or-equal timestamp: ties keep arrival (offset) order.
        timestamp = event.timestamp_ms
        at = (
            len(stamps)
            if not stamps or stamps[-1] <= timestamp
            else bisect_right(stamps, timestamp)
        )
        if at:
            in_order = at == len(items)  # the usual case: the history is the whole sequence
            examples.add(
                event_id=event.event_id,
                user_id=event.user_id,
                history=items if in_order else items[:at],
                history_timestamps_ms=stamps if in_order else stamps[:at],
                target_item_id=event.item_id,
                timestamp_ms=timestamp,
            )
        items.insert(at, event.item_id)
        stamps.insert(at, timestamp)
        if len(items) > max_length:
            del items[:-max_length], stamps[:-max_length]
    return {"items": items, "ts": stamps, "offset": last_offset}, examples
