"""The wire API: stubs match the .proto sources, events survive a round trip."""

import subprocess
import sys
from pathlib import Path

from streamrec.v1 import events_pb2

REPO = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_proto_sources():
    result = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_interaction_event_round_trip_keeps_every_field():
    event = events_pb2.InteractionEvent(
        event_id="e-1",
        user_id=7,
        item_id=42,
        event_type=events_pb2.EVENT_TYPE_RATING,
        value=4.5,
        timestamp_ms=1_700_000_000_123,
        context={"surface": "home"},
    )
    decoded = events_pb2.InteractionEvent.FromString(event.SerializeToString())
    assert decoded == event
    assert decoded.HasField("value") and decoded.value == 4.5


def test_absent_value_is_distinguished_from_zero():
    event = events_pb2.InteractionEvent(event_id="e-2", user_id=1, item_id=1, value=0.0)
    plain = events_pb2.InteractionEvent(event_id="e-3", user_id=1, item_id=1)
    assert events_pb2.InteractionEvent.FromString(event.SerializeToString()).HasField("value")
    assert not events_pb2.InteractionEvent.FromString(plain.SerializeToString()).HasField("value")


def test_item_event_round_trip_keeps_every_field():
    event = events_pb2.ItemEvent(
        event_id="i-1",
        item_id=1,
        title="Toy Story",
        year=1995,
        categories=["Animation", "Children's", "Comedy"],
        description="toys come alive",
        attributes={"language": "en"},
        timestamp_ms=1_700_000_000_000,
        deleted=False,
    )
    assert events_pb2.ItemEvent.FromString(event.SerializeToString()) == event
