"""Per-user sequences: the last N interactions of a user, updated exactly once per event.

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

from streamrec.v1 import events_pb2


def empty_sequence() -> dict:
    return {"items": [], "ts": [], "ids": [], "offset": -1}


def apply_events(
    sequence: dict | None,
    events: list[tuple[int, events_pb2.InteractionEvent]],
    max_length: int,
) -> tuple[dict, list[events_pb2.TrainingExample]]:
    """Append (source offset, event) pairs in offset order; returns the new sequence and
    one training example (history before the event -> the event's item) per applied
    event that had a history."""
    sequence = dict(sequence or empty_sequence())
    items, stamps, ids = list(sequence["items"]), list(sequence["ts"]), list(sequence["ids"])
    last_offset = sequence["offset"]
    examples = []
    for offset, event in events:
        if offset <= last_offset or event.event_id in ids:
            continue
        last_offset = offset
        if items:
            examples.append(
                events_pb2.TrainingExample(
                    event_id=event.event_id,
                    user_id=event.user_id,
                    history=items,
                    history_timestamps_ms=stamps,
                    target_item_id=event.item_id,
                    timestamp_ms=event.timestamp_ms,
                )
            )
        items = (items + [event.item_id])[-max_length:]
        stamps = (stamps + [event.timestamp_ms])[-max_length:]
        ids = (ids + [event.event_id])[-max_length:]
    return {"items": items, "ts": stamps, "ids": ids, "offset": last_offset}, examples
