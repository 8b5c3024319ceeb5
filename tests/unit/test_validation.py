"""Event validation: each kind of bad event is refused with a reason that names it."""

import pytest

from streamrec.settings import StreamSettings
from streamrec.v1 import events_pb2
from streams.producer import parse_event_type
from streams.validation import interaction_problem, item_problem

NOW = 1_800_000_000_000
SETTINGS = StreamSettings()


def _event(**fields):
    base = dict(
        event_id="e", user_id=1, item_id=2, event_type=events_pb2.EVENT_TYPE_CLICK, timestamp_ms=NOW
    )
    base.update(fields)
    return events_pb2.InteractionEvent(**base)


def test_a_good_event_passes():
    assert interaction_problem(_event(), NOW, SETTINGS) is None
    assert interaction_problem(_event(value=4.5), NOW, SETTINGS) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"event_id": ""}, "missing event_id"),
        ({"user_id": 0}, "user_id must be positive"),
        ({"user_id": -3}, "user_id must be positive"),
        ({"item_id": 0}, "item_id must be positive"),
        ({"event_type": 0}, "unknown event_type"),
        ({"event_type": 99}, "unknown event_type"),
        ({"timestamp_ms": 0}, "timestamp_ms must be positive"),
        ({"timestamp_ms": NOW + 2 * 86_400_000}, "in the future"),
        ({"timestamp_ms": NOW - 400 * 86_400_000}, "in the past"),
        ({"context": {f"k{i}": "v" for i in range(40)}}, "context has 40 entries"),
        ({"context": {"k": "v" * 1000}}, "longer than"),
        ({"value": float("nan")}, "value must be a finite number"),
        ({"value": float("inf")}, "value must be a finite number"),
        ({"value": float("-inf")}, "value must be a finite number"),
    ],
)
def test_bad_events_are_refused_with_their_reason(fields, reason):
    problem = interaction_problem(_event(**fields), NOW, SETTINGS)
    assert problem is not None and reason in str(problem)
    assert problem.code.replace("_", "").isalpha()


def test_item_events_need_an_id_and_a_title_unless_deleted():
    item = events_pb2.ItemEvent(event_id="i", item_id=5, title="", timestamp_ms=NOW)
    assert item_problem(item, NOW, SETTINGS).code == "missing_title"
    item.deleted = True
    assert item_problem(item, NOW, SETTINGS) is None
    item.item_id = 0
    assert "item_id must be positive" in str(item_problem(item, NOW, SETTINGS))


def test_event_type_names_are_parsed_and_unknown_ones_listed():
    assert parse_event_type("click") == events_pb2.EVENT_TYPE_CLICK
    assert parse_event_type("EVENT_TYPE_RATING") == events_pb2.EVENT_TYPE_RATING
    with pytest.raises(ValueError, match="known: view, click"):
        parse_event_type("teleport")
