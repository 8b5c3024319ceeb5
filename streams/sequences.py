"""Per-user sequences: the last N interactions of a user, updated exactly once per event.

A sequence is kept in event time, like `HistoryStore` reads it (timestamp, then
source offset): a late event is placed by its timestamp, and its training
example's history is the items before it in time.

A sequence is a plain dict so faust can keep it in a changelog-backed table:
``{"items": [...], "ts": [...], "ids": [...], "offset": int}``. An event is
applied at most once, for two reasons it could arrive again:

- redelivery after a crash (the table's changelog is ahead of the committed
  Kafka offset): one user's events all live on one partition, so an event at
  or below the last applied source offset has been applied already;
- the same event sent twice by an app (a new offset, the same event_id): the
  event ids of the window are kept and checked.
"""

from __future__ import annotations

from bisect import bisect_right

from streamrec.v1 import events_pb2


def empty_sequence() -> dict:
    return {"items": [], "ts": [], "ids": [], "offset": -1}


def apply_events(
    sequence: dict | None,
    events: list[tuple[int, events_pb2.InteractionEvent]],
    max_length: int,
) -> tuple[dict, list[events_pb2.TrainingExample]]:
    """Place (source offset, event) pairs, given in offset order, by their timestamps;
    returns the new sequence and one training example (history before the event in
    time -> the event's item) per applied event that had a history."""
    sequence = dict(sequence or empty_sequence())
    items, stamps, ids = list(sequence["items"]), list(sequence["ts"]), list(sequence["ids"])
    last_offset = sequence["offset"]
    examples = []
    for offset, event in events:
        if offset <= last_offset or event.event_id in ids:
            continue
        last_offset = offset
        # After every earlier-or-equal timestamp: ties keep arrival (offset) order.
        at = bisect_right(stamps, event.timestamp_ms)
        if at:
            examples.append(
                events_pb2.TrainingExample(
                    event_id=event.event_id,
                    user_id=event.user_id,
                    history=items[:at],
                    history_timestamps_ms=stamps[:at],
                    target_item_id=event.item_id,
                    timestamp_ms=event.timestamp_ms,
                )
            )
        items = (items[:at] + [event.item_id] + items[at:])[-max_length:]
        stamps = (stamps[:at] + [event.timestamp_ms] + stamps[at:])[-max_length:]
        ids = (ids[:at] + [event.event_id] + ids[at:])[-max_length:]
    return {"items": items, "ts": stamps, "ids": ids, "offset": last_offset}, examples
