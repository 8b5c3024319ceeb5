"""Event identity: an event_id is stored once, and the first content sent under it wins.

An app's retry that re-stamps the time, or a bug that reuses an id for another user,
would otherwise become a second row (the interactions table collapses rows on
(user_id, timestamp_ms, event_id), which such a pair does not share) or, with the
same sorting key, overwrite the first one's content. So before a batch is stored,
its event ids are looked up in the `event_ids` table, which holds the first
content's fingerprint and source position for every id, from every partition:

- the same position as the stored one: this worker is handling the batch again
  after a crash, and the event goes on (its rows collapse as before);
- the same content from elsewhere: a plain retry; it was stored already, dropped;
- other content: refused, and dead-lettered as `duplicate_event_id`.

Two workers receiving one id with different content in the same instant, on
different partitions, can both store it: the lookup and the insert are not one
transaction. Kafka keys events by user, so that takes one id reused for two
users within one batch interval.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from streamrec.v1 import events_pb2
from streams.validation import Problem

# Larger than any millisecond timestamp, so that `precedence` stays positive.
_PRECEDENCE_BASE = 1 << 62


class Stored(NamedTuple):
    """What `event_ids` holds for an id (a tuple: one is made per event)."""

    fingerprint: int
    user_id: int
    partition: int
    offset: int


def fingerprint(event: events_pb2.InteractionEvent) -> int:
    """A 64-bit digest of everything the event says (its bytes are not canonical)."""
    digest = hashlib.blake2b(event.SerializeToString(deterministic=True), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def event_id_columns(new_ids: list[tuple[str, Stored]], ingested_ms: int) -> list[list]:
    """`Verdicts.new_ids` as the columns of streams.sink.EVENT_ID_COLUMNS."""
    return [
        [event_id for event_id, _ in new_ids],
        [stored.fingerprint for _, stored in new_ids],
        [stored.user_id for _, stored in new_ids],
        [stored.partition for _, stored in new_ids],
        [stored.offset for _, stored in new_ids],
        [ingested_ms] * len(new_ids),
        [_PRECEDENCE_BASE - ingested_ms] * len(new_ids),
    ]


@dataclass
class Verdicts:
    """A batch's events sorted by `first_wins`; each entry is what the caller passed."""

    keep: list
    new_ids: list[tuple[str, Stored]]  # ids stored for the first time, to record
    repeats: list
    refused: list  # (entry, Problem)


def first_wins(entries: list, known: dict[str, Stored]) -> Verdicts:
    """Sort `(source, partition, offset, event)` entries, in arrival order, into the
    events to store, the repeats to drop and the ones to dead-letter.

    `known` holds what earlier batches stored; the batch's own events count too, so
    the first of several events with one id is the one kept."""
    seen = dict(known)
    verdicts = Verdicts([], [], [], [])
    for entry in entries:
        _, partition, offset, event = entry
        mine = Stored(fingerprint(event), event.user_id, partition, offset)
        first = seen.get(event.event_id)
        if first is None:
            seen[event.event_id] = mine
            verdicts.keep.append(entry)
            verdicts.new_ids.append((event.event_id, mine))
        elif (first.partition, first.offset) == (partition, offset):
            verdicts.keep.append(entry)  # this very message again, after a crash
        elif first.fingerprint == mine.fingerprint:
            verdicts.repeats.append(entry)
        else:
            verdicts.refused.append(
                (
                    entry,
                    Problem(
                        "duplicate_event_id",
                        f"event_id {event.event_id!r} was first stored with other content "
                        f"(user {first.user_id}, partition {first.partition}, "
                        f"offset {first.offset})",
                    ),
                )
            )
    return verdicts
