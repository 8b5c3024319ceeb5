"""The real local Kafka and ClickHouse: produce and consume, insert and read, schema, stop."""

import socket
import subprocess
import uuid

from clickhouse_driver import Client
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamrec.db import TABLES, connect, migrate
from streamrec.services import LocalServices
from streamrec.services.process import pid_alive
from streamrec.settings import Settings


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=10_000)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received = []
    for message in consumer:
        received.append((message.key, message.value))
        if len(received) == expected:
            break
    consumer.close()
    return received


def _leftover_processes(data_dir) -> str:
    return subprocess.run(["pgrep", "-af", str(data_dir)], capture_output=True, text=True).stdout


def test_kafka_produce_and_consume(services):
    bootstrap = services.settings.kafka.bootstrap_servers
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    sent = [(f"user-{i % 3}".encode(), f"event-{i}".encode()) for i in range(50)]
    _produce(bootstrap, topic, sent)

    received = _consume_all(bootstrap, topic, len(sent))
    assert sorted(received) == sorted(sent)
    # Per key, order is kept (one key -> one partition).
    for key in {k for k, _ in sent}:
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]
    # The topic was auto-created with the configured partition count.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    assert len(consumer.partitions_for_topic(topic)) == services.settings.kafka.partitions
    consumer.close()


def test_clickhouse_insert_and_read(services):
    client = Client(host=services.settings.clickhouse.host, port=services.settings.clickhouse.port)
    table = f"default.roundtrip_{uuid.uuid4().hex[:8]}"
    client.execute(
        f"CREATE TABLE {table} (id Int64, name String, tags Array(String)) "
        "ENGINE = MergeTree ORDER BY id"
    )
    rows = [(i, f"name-{i}", [f"t{i}"] * (i % 3)) for i in range(100)]
    client.execute(f"INSERT INTO {table} (id, name, tags) VALUES", rows)
    assert client.execute(f"SELECT id, name, tags FROM {table} ORDER BY id") == rows
    assert client.execute(f"SELECT name FROM {table} WHERE id = %(id)s", {"id": 42}) == [
        ("name-42",)
    ]
    # The generated users.xml profile is in force.
    assert client.execute("SELECT value FROM system.settings WHERE name = 'max_threads'") == [
        ("2",)
    ]
    client.execute(f"DROP TABLE {table}")
    client.disconnect()


def test_schema_applies_twice_and_collapses_duplicates(services):
    settings = services.settings
    assert set(migrate(settings)) >= {t.name for t in TABLES}
    assert set(migrate(settings)) >= {t.name for t in TABLES}
    client = connect(settings)
    row = ("dup-event", 7, 9, 1, None, 1_700_000_000, 1_700_000_000_000, [], [], 0, 5, 1)
    columns = (
        "event_id, user_id, item_id, event_type, value, timestamp, timestamp_ms, "
        "context_keys, context_values, source_partition, source_offset, ingested_ms"
    )
    client.execute(f"INSERT INTO interactions ({columns}) VALUES", [row])
    client.execute(f"INSERT INTO interactions ({columns}) VALUES", [row[:-1] + (2,)])
    assert client.execute(
        "SELECT count() FROM interactions FINAL WHERE event_id = %(id)s", {"id": "dup-event"}
    ) == [(1,)]


def test_busy_ports_are_skipped_start_is_idempotent_and_stop_leaves_nothing(tmp_path):
    """A second data directory gets its own broker and server beside the session's."""
    launcher = LocalServices(Settings(data_dir=tmp_path))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        busy = blocker.getsockname()[1]
        blocker.listen()
        # The last run used the busy port: the launcher must move on.
        launcher._write_state(
            {
                "kafka": {"port": busy, "running": False},
                "clickhouse": {"port": busy, "http_port": busy, "running": False},
            }
        )
        launcher.start()
        try:
            status = launcher.status()
            assert status["kafka"]["running"] and status["clickhouse"]["running"]
            assert busy not in {status["kafka"]["port"], status["clickhouse"]["port"]}
            assert busy != status["clickhouse"]["http_port"]
            pids = [status["kafka"]["pid"], status["clickhouse"]["pid"]]
            assert all(pid_alive(pid) for pid in pids)
            # start is idempotent: the same processes are reused.
            launcher.start()
            assert [launcher.status()[n]["pid"] for n in ("kafka", "clickhouse")] == pids
        finally:
            launcher.stop()
    assert not any(pid_alive(pid) for pid in pids)
    assert _leftover_processes(tmp_path) == ""
    assert not any(launcher.status()[name]["running"] for name in ("kafka", "clickhouse"))


def test_start_after_stop_keeps_ports_and_data(tmp_path):
    launcher = LocalServices(Settings(data_dir=tmp_path))
    first = launcher.start()
    topic, table = "kept", "default.kept"
    # Both stay connected across the stop, as a running worker would: the servers close those
    # connections and their ports linger in TIME_WAIT, which must not cost the ports.
    producer = KafkaProducer(bootstrap_servers=first.kafka_bootstrap_servers, acks="all")
    client = Client(host=first.clickhouse_host, port=first.clickhouse_port)
    try:
        producer.send(topic, key=b"k", value=b"before stop").get(timeout=30)
        client.execute(f"CREATE TABLE {table} (id UInt32) ENGINE = MergeTree ORDER BY id")
        client.execute(f"INSERT INTO {table} (id) VALUES", [[1], [2], [3]])
    finally:
        launcher.stop()
        producer.close(timeout=1)
        client.disconnect()
    assert _leftover_processes(tmp_path) == ""

    second = launcher.start()
    try:
        assert second == first  # the same addresses: clients that knew them reconnect
        assert _consume_all(second.kafka_bootstrap_servers, topic, 1) == [(b"k", b"before stop")]
        client = Client(host=second.clickhouse_host, port=second.clickhouse_port)
        assert client.execute(f"SELECT id FROM {table} ORDER BY id") == [(1,), (2,), (3,)]
        client.disconnect()
    finally:
        launcher.stop()
    assert _leftover_processes(tmp_path) == ""
