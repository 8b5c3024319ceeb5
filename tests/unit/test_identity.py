"""Event identity: the first content under an event_id wins, in a batch and across them."""

from streamrec.v1 import events_pb2
from streams.identity import Stored, fingerprint, first_wins


def _event(event_id="a", user_id=1, item_id=2, timestamp_ms=1000):
    return events_pb2.InteractionEvent(
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        event_type=1,
        timestamp_ms=timestamp_ms,
    )


def _entries(*events):
    return [(f"src{n}", 0, 10 + n, event) for n, event in enumerate(events)]


def test_the_first_of_a_batch_wins_and_a_changed_copy_is_refused():
    first, retry, restamped, other_user = (
        _event(),
        _event(),
        _event(timestamp_ms=2000),
        _event(user_id=9),
    )
    verdicts = first_wins(_entries(first, retry, restamped, other_user, _event("b")), {})
    assert [entry[0] for entry in verdicts.keep] == ["src0", "src4"]
    assert [entry[0] for entry in verdicts.repeats] == ["src1"]
    assert [entry[0] for entry, _ in verdicts.refused] == ["src2", "src3"]
    assert {problem.code for _, problem in verdicts.refused} == {"duplicate_event_id"}
    assert "offset 10" in str(verdicts.refused[0][1])
    assert [event_id for event_id, _ in verdicts.new_ids] == ["a", "b"]


def test_what_an_earlier_batch_stored_wins():
    stored = {"a": Stored(fingerprint(_event()), 1, 3, 77)}
    verdicts = first_wins(_entries(_event(), _event(item_id=5)), stored)
    assert verdicts.keep == [] and verdicts.new_ids == []
    assert len(verdicts.repeats) == 1 and len(verdicts.refused) == 1


def test_a_message_handled_again_after_a_crash_goes_on():
    stored = {"a": Stored(fingerprint(_event()), 1, 0, 10)}
    verdicts = first_wins(_entries(_event()), stored)
    assert [entry[0] for entry in verdicts.keep] == ["src0"]
    assert verdicts.new_ids == [] and verdicts.repeats == [] and verdicts.refused == []
