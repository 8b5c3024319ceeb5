"""Per-user sequences: order kept, window bounded, every event applied exactly once."""

from streamrec.v1 import events_pb2
from streams.sequences import apply_events, decode, empty_sequence, encode


def _event(n, item):
    return events_pb2.InteractionEvent(
        event_id=f"e{n}", user_id=7, item_id=item, event_type=1, timestamp_ms=1000 + n
    )


def test_events_are_appended_in_order_and_examples_carry_the_history():
    events = [(n, _event(n, item)) for n, item in enumerate([10, 11, 12])]
    sequence, examples = apply_events(None, events, max_length=50)
    assert sequence["items"] == [10, 11, 12]
    assert sequence["ts"] == [1000, 1001, 1002]
    assert sequence["offset"] == 2
    # The first event has no history, so no example.
    assert [(list(e.history), e.target_item_id) for e in examples] == [([10], 11), ([10, 11], 12)]


def test_window_keeps_the_last_n_items():
    events = [(n, _event(n, 100 + n)) for n in range(10)]
    sequence, examples = apply_events(None, events, max_length=4)
    assert sequence["items"] == [106, 107, 108, 109]
    assert list(examples[-1].history) == [105, 106, 107, 108]


def test_redelivered_offsets_are_skipped():
    sequence, _ = apply_events(None, [(0, _event(0, 1)), (1, _event(1, 2))], max_length=50)
    # After a crash the same offsets come again, then a new one.
    again, examples = apply_events(sequence, [(1, _event(1, 2)), (2, _event(2, 3))], max_length=50)
    assert again["items"] == [1, 2, 3]
    assert [e.target_item_id for e in examples] == [3]


def test_a_sequence_survives_its_table_bytes_and_old_json_ones_still_load():
    events = [(n, _event(n, 10 + n)) for n in range(5)]
    sequence, _ = apply_events(None, events, max_length=50)
    assert decode(encode(sequence)) == sequence
    assert decode(encode(empty_sequence())) == empty_sequence()
    # What a worker before format 2 left in the changelog: JSON with the window's ids.
    old = b'[4,[10,11,12,13,14],[1000,1001,1002,1003,1004],["e0","e1","e2","e3","e4"]]'
    assert decode(old) == sequence
    assert decode(None) is None


def test_a_late_event_is_placed_by_its_timestamp():
    def at(n, item, ts):
        return (
            n,
            events_pb2.InteractionEvent(
                event_id=f"e{n}", user_id=7, item_id=item, event_type=1, timestamp_ms=ts
            ),
        )

    # Arrival order 10, 12, 11 (late), 13; 14 ties with 12 and goes after it.
    events = [at(0, 10, 100), at(1, 12, 300), at(2, 11, 200), at(3, 13, 400), at(4, 14, 300)]
    sequence, examples = apply_events(None, events, max_length=50)
    assert sequence["items"] == [10, 11, 12, 14, 13]
    assert sequence["ts"] == sorted(sequence["ts"])
    histories = [(list(e.history), e.target_item_id) for e in examples]
    assert histories == [
        ([10], 12),
        ([10], 11),  # the late event learns only from what came before it in time
        ([10, 11, 12], 13),
        ([10, 11, 12], 14),
    ]
    assert list(examples[1].history_timestamps_ms) == [100]


def test_a_mix_of_late_and_in_order_events_matches_sorting_the_whole_history():
    """The in-place fast path for in-order events and the bisect for late ones give what
    a stable sort by timestamp of everything, cut to the window, gives."""
    import random

    rng = random.Random(3)
    stamps = [1000 + n * 10 + (rng.randint(-40, 0) if rng.random() < 0.3 else 0) for n in range(80)]
    events = [
        (
            n,
            events_pb2.InteractionEvent(
                event_id=f"e{n}", user_id=7, item_id=500 + n, event_type=1, timestamp_ms=stamp
            ),
        )
        for n, stamp in enumerate(stamps)
    ]
    sequence = None
    for start in range(0, 80, 7):  # batches of 7, through the table's bytes
        sequence, _ = apply_events(sequence, events[start : start + 7], max_length=12)
        sequence = decode(encode(sequence))
    everything = sorted((e.timestamp_ms, n, e.item_id) for n, e in events)
    assert sequence["items"] == [item for _, _, item in everything][-12:]
    assert sequence["ts"] == [stamp for stamp, _, _ in everything][-12:]
