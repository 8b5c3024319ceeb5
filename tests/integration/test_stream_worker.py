"""The stream worker against the real Kafka and ClickHouse: nothing lost, nothing doubled."""

from __future__ import annotations

import hashlib
import random
import time
import urllib.request

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamrec.db import connect, count_rows
from streamrec.history import HistoryStore
from streamrec.services import LocalServices
from streamrec.services.children import wait_for
from streamrec.v1 import events_pb2
from streams.producer import InteractionProducer, ItemProducer, now_ms


def _send_clicks(settings, count: int, users: int = 7, start: int = 0, prefix: str = "e") -> list:
    sent = []
    with InteractionProducer.from_settings(settings) as producer:
        for n in range(start, start + count):
            sent.append(
                producer.send(
                    user_id=1 + n % users,
                    item_id=100 + n,
                    event_type="click",
                    event_id=f"{prefix}{n}",
                    timestamp_ms=now_ms(),
                )
            )
    return sent


def _read_topic(settings, topic: str, message_type, expected: int, timeout_s: float = 60) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    messages = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < expected and time.monotonic() < deadline:
        for record in consumer:
            messages.append(message_type.FromString(record.value))
    consumer.close()
    return messages


def _examples(settings, expected: int) -> list:
    batches = _read_topic(
        settings, settings.kafka.training_examples_topic, events_pb2.TrainingExampleBatch, expected
    )
    return [example for batch in batches for example in batch.examples]


def _stored_sequences(settings) -> dict[int, list[int]]:
    client = connect(settings)
    rows = client.execute(
        "SELECT user_id, item_id FROM interactions FINAL "
        "ORDER BY user_id, timestamp_ms, source_offset"
    )
    client.disconnect()
    sequences: dict[int, list[int]] = {}
    for user_id, item_id in rows:
        sequences.setdefault(user_id, []).append(item_id)
    return sequences


def test_every_event_is_stored_once_in_order_with_training_examples(stream_worker):
    settings = stream_worker.settings
    stream_worker.start()
    sent = _send_clicks(settings, 600)
    wait_for(lambda: count_rows(settings, "interactions") >= 600, 90, "600 rows", stream_worker)

    assert count_rows(settings, "interactions") == 600
    expected = {}
    for event in sent:
        expected.setdefault(event.user_id, []).append(event.item_id)
    assert _stored_sequences(settings) == expected

    history = HistoryStore(settings)
    assert [h.item_id for h in history.recent(1, 5)] == expected[1][-5:]
    history.close()

    # One example per event that had a history before it; its history is the sequence so far.
    examples = _examples(settings, expected=600 - len(expected))
    assert len(examples) == 600 - len(expected)
    last = next(e for e in reversed(examples) if e.user_id == 1)
    window = settings.streams.sequence_length
    assert list(last.history) == expected[1][:-1][-window:]
    assert last.target_item_id == expected[1][-1]


def test_the_users_of_a_batch_are_named_on_history_updates_once_readable(stream_worker):
    settings = stream_worker.settings
    stream_worker.start()
    topic = settings.kafka.history_updates_topic
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, consumer_timeout_ms=200
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    sent = _send_clicks(settings, 70, users=7, prefix="u")
    history = HistoryStore(settings)
    named, deadline = set(), time.monotonic() + 90
    while named != {event.user_id for event in sent} and time.monotonic() < deadline:
        for record in consumer:
            users = set(events_pb2.HistoryUpdate.FromString(record.value).user_ids)
            # Read as soon as heard: a server re-reading now must find the new rows.
            assert set(history.batch_recent(users, 1)) == users
            named |= users
    consumer.close()
    history.close()
    assert named == {event.user_id for event in sent}


def test_malformed_events_go_to_the_dlq_and_good_ones_keep_flowing(stream_worker):
    settings = stream_worker.settings
    stream_worker.start()
    raw = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    good = InteractionProducer.from_settings(settings)
    future = now_ms() + 10 * 86_400_000
    kinds = [
        lambda n: b"\xff\xfenot a protobuf" + str(n).encode(),
        lambda n: events_pb2.InteractionEvent(
            event_id=f"bad{n}", user_id=1, item_id=2, event_type=99, timestamp_ms=now_ms()
        ).SerializeToString(),
        lambda n: events_pb2.InteractionEvent(
            event_id=f"bad{n}", user_id=0, item_id=2, event_type=1, timestamp_ms=now_ms()
        ).SerializeToString(),
        lambda n: events_pb2.InteractionEvent(
            event_id=f"bad{n}", user_id=3, item_id=-4, event_type=1, timestamp_ms=now_ms()
        ).SerializeToString(),
        lambda n: events_pb2.InteractionEvent(
            event_id=f"bad{n}", user_id=3, item_id=4, event_type=1, timestamp_ms=future
        ).SerializeToString(),
        lambda n: events_pb2.InteractionEvent(
            event_id=f"bad{n}", user_id=3, item_id=4, event_type=1, timestamp_ms=1000
        ).SerializeToString(),
        lambda n: b"x" * (settings.streams.max_event_bytes + 1),
        lambda n: events_pb2.InteractionEvent(
            event_id="", user_id=3, item_id=4, event_type=1, timestamp_ms=now_ms()
        ).SerializeToString(),
    ]
    for n in range(1000):
        raw.send(settings.kafka.interactions_topic, key=b"3", value=kinds[n % len(kinds)](n))
        if n % 10 == 0:
            good.send(user_id=5, item_id=1000 + n, event_type="view", event_id=f"good{n}")
    raw.flush()
    good.close()

    wait_for(
        lambda: count_rows(settings, "interactions") >= 100, 90, "100 good rows", stream_worker
    )
    letters = _read_topic(settings, settings.kafka.dlq_topic, events_pb2.DeadLetter, 1000)
    assert len(letters) == 1000
    assert count_rows(settings, "interactions") == 100
    reasons = " | ".join(letter.reason for letter in letters)
    for expected in (
        "not a InteractionEvent",
        "unknown event_type",
        "user_id must be positive",
        "item_id must be positive",
        "in the future",
        "in the past",
        "exceeds",
        "missing event_id",
    ):
        assert expected in reasons
    assert all(letter.source_topic == settings.kafka.interactions_topic for letter in letters)
    offsets = sorted((letter.source_partition, letter.source_offset) for letter in letters)
    assert len(set(offsets)) == 1000
    assert letters[0].payload  # the original bytes travel with the reason

    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{settings.streams.web_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    topic = settings.kafka.interactions_topic
    for code in ("undecodable", "oversized", "bad_user_id"):
        # Eight kinds of bad event, 125 of each.
        labels = (("reason", code), ("topic", topic))
        assert samples[("streamrec_stream_dead_letters_total", labels)] == 125
    assert samples[("streamrec_sink_rows_total", (("table", "interactions"),))] == 100
    health = urllib.request.urlopen(
        f"http://127.0.0.1:{settings.streams.web_port}/health", timeout=10
    ).read()
    assert b'"ok"' in health


def test_a_message_at_the_broker_limit_is_dead_lettered_and_the_partition_moves_on(
    stream_worker,
):
    """The broker takes ~1 MB; the letter for it must still fit the worker's producer."""
    settings = stream_worker.settings
    stream_worker.start()
    raw = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", max_request_size=2**21
    )
    huge = bytes(range(256)) * (1_040_000 // 256)
    raw.send(settings.kafka.interactions_topic, key=b"8", value=huge, partition=0).get(30)
    after = events_pb2.InteractionEvent(
        event_id="after-huge", user_id=8, item_id=9, event_type=1, timestamp_ms=now_ms()
    )
    raw.send(
        settings.kafka.interactions_topic,
        key=b"8",
        value=after.SerializeToString(),
        partition=0,
    ).get(30)
    raw.close()

    wait_for(lambda: count_rows(settings, "interactions") >= 1, 60, "the next event", stream_worker)
    (letter,) = _read_topic(settings, settings.kafka.dlq_topic, events_pb2.DeadLetter, 1)
    assert letter.reason.startswith("oversized")
    assert letter.truncated and letter.original_size == len(huge)
    assert letter.original_sha256 == hashlib.sha256(huge).hexdigest()
    assert letter.payload == huge[: settings.streams.dead_letter_payload_bytes]
    assert stream_worker.running()
    assert _stored_sequences(settings) == {8: [9]}


def test_late_and_early_events_take_their_place_in_time_as_history_reads_them(stream_worker):
    settings = stream_worker.settings
    stream_worker.start()
    start = now_ms() - 3_600_000
    shuffled = random.Random(7)
    with InteractionProducer.from_settings(settings) as producer:
        for user in range(21, 36):
            stamps = [start + 1000 * n for n in range(30)]
            shuffled.shuffle(stamps)
            for n, stamp in enumerate(stamps):
                producer.send(
                    user_id=user, item_id=500 + n, event_id=f"{user}-{n}", timestamp_ms=stamp
                )
        # A last event per user, newest of all: its example's history is the sequence.
        for user in range(21, 36):
            producer.send(user_id=user, item_id=999, event_id=f"{user}-last", timestamp_ms=now_ms())
    wait_for(lambda: count_rows(settings, "interactions") >= 465, 90, "465 rows", stream_worker)

    last = {e.user_id: e for e in _examples(settings, expected=450) if e.target_item_id == 999}
    history = HistoryStore(settings)
    window = settings.streams.sequence_length
    for user in range(21, 36):
        stored = [h.item_id for h in history.recent(user, window + 1)][:-1]
        assert list(last[user].history) == stored
        assert list(last[user].history_timestamps_ms) == sorted(last[user].history_timestamps_ms)
    history.close()


def test_the_same_event_sent_twice_is_stored_once(stream_worker):
    settings = stream_worker.settings
    stream_worker.start()
    event = events_pb2.InteractionEvent(
        event_id="twice", user_id=11, item_id=12, event_type=1, timestamp_ms=now_ms()
    )
    with InteractionProducer.from_settings(settings) as producer:
        producer.send_event(event)
        producer.send_event(event)
        producer.send(user_id=11, item_id=13, event_id="after")
    wait_for(lambda: count_rows(settings, "interactions") >= 2, 60, "rows", stream_worker)
    time.sleep(1)
    assert count_rows(settings, "interactions", final=True) == 2
    assert _stored_sequences(settings) == {11: [12, 13]}
    examples = _examples(settings, expected=1)
    assert [(list(e.history), e.target_item_id) for e in examples] == [([12], 13)]


def test_an_event_id_is_stored_once_and_changed_copies_go_to_the_dlq(stream_worker):
    """A retry that re-stamps the time, the id reused for another user or another item:
    the first content wins in ClickHouse, the sequences and the examples."""
    settings = stream_worker.settings
    stream_worker.start()
    stamp = now_ms() - 60_000
    first = events_pb2.InteractionEvent(
        event_id="reused", user_id=41, item_id=1, event_type=1, timestamp_ms=stamp
    )
    changed = [
        events_pb2.InteractionEvent(
            event_id="reused", user_id=41, item_id=1, event_type=1, timestamp_ms=stamp + 5
        ),
        events_pb2.InteractionEvent(
            event_id="reused", user_id=42, item_id=1, event_type=1, timestamp_ms=stamp
        ),
        events_pb2.InteractionEvent(
            event_id="reused", user_id=41, item_id=7, event_type=1, timestamp_ms=stamp
        ),
    ]
    with InteractionProducer.from_settings(settings) as producer:
        producer.send_event(first)
        producer.send(user_id=41, item_id=2, event_id="next", timestamp_ms=stamp + 1000)
        producer.flush()
        # A later batch, so the first is found in ClickHouse rather than in the batch.
        wait_for(lambda: count_rows(settings, "interactions") >= 2, 60, "rows", stream_worker)
        for event in changed:
            producer.send_event(event)
        producer.send_event(first)  # an exact retry: dropped quietly
        producer.send(user_id=42, item_id=3, event_id="after", timestamp_ms=stamp + 2000)
    wait_for(lambda: count_rows(settings, "interactions") >= 3, 60, "the last row", stream_worker)

    letters = _read_topic(settings, settings.kafka.dlq_topic, events_pb2.DeadLetter, 3)
    assert len(letters) == 3
    assert all(letter.reason.startswith("duplicate_event_id") for letter in letters)
    assert sorted(letter.payload for letter in letters) == sorted(
        event.SerializeToString() for event in changed
    )
    time.sleep(1)
    assert count_rows(settings, "interactions", final=True) == 3
    assert _stored_sequences(settings) == {41: [1, 2], 42: [3]}
    examples = _examples(settings, expected=1)
    assert [(e.user_id, list(e.history), e.target_item_id) for e in examples] == [(41, [1], 2)]


def test_items_are_upserted_and_new_ones_ask_for_knowledge(stream_worker):
    settings = stream_worker.settings
    stream_worker.start()
    with ItemProducer.from_settings(settings) as items:
        items.send(item_id=1, title="Heat", year=1995, categories=["Crime"])
        items.send(item_id=2, title="Up", year=2009)
        items.send(item_id=1, title="Heat (1995)", year=1995, categories=["Crime", "Drama"])
    requests = _read_topic(
        settings, settings.kafka.knowledge_requests_topic, events_pb2.KnowledgeRequest, 2
    )
    assert sorted(r.item_id for r in requests) == [1, 2]
    client = connect(settings)
    wait_for(lambda: client.execute("SELECT count() FROM items FINAL")[0][0] == 2, 30, "items")
    assert client.execute("SELECT title, categories FROM items FINAL WHERE item_id = 1") == [
        ("Heat (1995)", ["Crime", "Drama"])
    ]
    client.disconnect()


def test_a_killed_worker_resumes_without_losing_or_doubling(stream_worker):
    settings = stream_worker.settings
    stream_worker.start()
    sent = _send_clicks(settings, 3000, users=5)
    wait_for(lambda: count_rows(settings, "interactions") >= 500, 90, "first rows", stream_worker)
    stream_worker.kill()
    sent += _send_clicks(settings, 1000, users=5, start=3000)
    stream_worker.start()
    # The restarted worker waits out the dead one's session, rebalances and recovers the
    # sequence table from its changelog before it goes on; a loaded CI machine is slow at it.
    try:
        wait_for(
            lambda: count_rows(settings, "interactions", final=True) >= 4000,
            240,
            "all rows",
            stream_worker,
        )
    except TimeoutError as error:  # say whether rows were lost or the worker stalled
        stored = count_rows(settings, "interactions", final=True)
        raise AssertionError(f"{stored} of 4000 rows stored; {error}") from None
    assert count_rows(settings, "interactions", final=True) == 4000
    expected = {}
    for event in sent:
        expected.setdefault(event.user_id, []).append(event.item_id)
    assert _stored_sequences(settings) == expected

    # The sequence table came back from its changelog: a new event's example
    # carries the whole window, built across the crash.
    _send_clicks(settings, 1, users=5, start=4000, prefix="late")
    window = settings.streams.sequence_length
    user = 1 + 4000 % 5

    def late_example():
        return [e for e in _examples(settings, expected=1) if e.event_id == "late4000"]

    (example,) = wait_for(late_example, 60, "the late example", stream_worker)
    assert list(example.history) == expected[user][-window:]


def test_a_killed_worker_is_replaced_without_waiting_out_its_session(stream_worker):
    """Static membership: the restarted worker rejoins under its predecessor's id, so it
    writes again long before the dead one's session (60 s here) would have expired."""
    settings = stream_worker.settings
    stream_worker.environment["STREAMREC_STREAMS__SESSION_TIMEOUT_S"] = "60"
    stream_worker.start()
    _send_clicks(settings, 200, users=5)
    wait_for(lambda: count_rows(settings, "interactions") >= 200, 90, "first rows", stream_worker)
    stream_worker.kill()
    _send_clicks(settings, 200, users=5, start=200)
    restarted = time.monotonic()
    stream_worker.start()
    wait_for(
        lambda: count_rows(settings, "interactions", final=True) >= 400,
        30,
        "the restarted worker's rows, well within the 60 s session",
        stream_worker,
    )
    assert time.monotonic() - restarted < 30
    assert count_rows(settings, "interactions", final=True) == 400


def test_rows_written_while_clickhouse_is_down_arrive_when_it_returns(stream_worker, services):
    settings = stream_worker.settings
    stream_worker.start()
    _send_clicks(settings, 100)
    wait_for(lambda: count_rows(settings, "interactions") >= 100, 90, "first rows", stream_worker)

    launcher: LocalServices = services.launcher
    clickhouse = launcher.servers["clickhouse"]
    entry = launcher.status()["clickhouse"]
    clickhouse.stop(entry)
    _send_clicks(settings, 900, start=100)
    time.sleep(20)
    launcher.start()
    wait_for(
        lambda: count_rows(settings, "interactions", final=True) >= 1000,
        90,
        "rows after outage",
        stream_worker,
    )
    assert count_rows(settings, "interactions", final=True) == 1000
    assert "retrying" in stream_worker.log()


def test_a_movielens_replay_is_stored_row_for_row_in_order(stream_worker):
    from streamrec.datasets import load_dataset
    from streams.replay import replay_dataset

    settings = stream_worker.settings
    stream_worker.start()
    summary = replay_dataset(settings, "ml-100k", limit=3000, show_progress=False)
    assert summary.items == 1682 and summary.interactions == 3000
    wait_for(lambda: count_rows(settings, "interactions") >= 3000, 120, "3000 rows", stream_worker)
    assert count_rows(settings, "interactions") == 3000  # no row doubled, none lost

    expected: dict[int, list[int]] = {}
    for record in load_dataset("ml-100k", settings).interaction_records()[:3000]:
        expected.setdefault(record.user_id, []).append(record.item_id)
    assert _stored_sequences(settings) == expected
