"""The ClickHouse sink: rows from the stream, inserted in batches, retried until stored.

The stream worker calls `write` once per batch and only acknowledges the
batch's Kafka offsets after it returns, so a row is never committed before it
is stored. While ClickHouse is down `write` keeps retrying with capped
exponential backoff: the stream stops (backpressure) instead of dropping rows.
Redelivered rows are harmless: the tables collapse rows with the same key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from prometheus_client import Counter, Histogram

from streamrec.db import connect
from streamrec.settings import Settings
from streamrec.v1 import events_pb2
from streams.identity import Stored

log = logging.getLogger(__name__)

SINK_ROWS = Counter("streamrec_sink_rows_total", "Rows written to ClickHouse", ["table"])
SINK_BATCH = Histogram(
    "streamrec_sink_batch_rows",
    "Rows per ClickHouse insert",
    ["table"],
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000),
)
SINK_SECONDS = Histogram("streamrec_sink_seconds", "Seconds per ClickHouse insert", ["table"])
SINK_RETRIES = Counter(
    "streamrec_sink_retries_total", "Failed ClickHouse inserts retried", ["table"]
)

INTERACTION_COLUMNS = (
    "event_id, user_id, item_id, event_type, value, timestamp, timestamp_ms, "
    "context_keys, context_values, source_partition, source_offset, ingested_ms"
)
EVENT_ID_COLUMNS = (
    "event_id, fingerprint, user_id, source_partition, source_offset, ingested_ms, precedence"
)
ITEM_COLUMNS = (
    "item_id, title, year, categories, description, attribute_keys, attribute_values, "
    "deleted, updated_ms"
)


def interaction_columns(kept: Sequence[tuple], ingested_ms: int) -> list[list]:
    """`(partition, offset, event)` entries as the columns of INTERACTION_COLUMNS.
    clickhouse-driver sends columns; built here directly, no row is made and transposed."""
    events = [event for _, _, event in kept]
    contexts = [sorted(event.context.items()) if event.context else () for event in events]
    return [
        [event.event_id for event in events],
        [event.user_id for event in events],
        [event.item_id for event in events],
        [event.event_type for event in events],
        [event.value if event.HasField("value") else None for event in events],
        [event.timestamp_ms // 1000 for event in events],
        [event.timestamp_ms for event in events],
        [[key for key, _ in context] for context in contexts],
        [[value for _, value in context] for context in contexts],
        [partition for partition, _, _ in kept],
        [offset for _, offset, _ in kept],
        [ingested_ms] * len(events),
    ]


def item_row(event: events_pb2.ItemEvent) -> tuple:
    keys = sorted(event.attributes)
    return (
        event.item_id,
        event.title,
        event.year,
        list(event.categories),
        event.description,
        keys,
        [event.attributes[k] for k in keys],
        int(event.deleted),
        event.timestamp_ms,
    )


class ClickHouseSink:
    """Blocking inserts with retry; run it in an executor thread from async code.

    Each thread gets its own connection: clickhouse-driver connections are not
    thread-safe, and the interactions and items agents insert concurrently.
    """

    def __init__(self, settings: Settings, max_backoff_s: float = 5.0):
        self.settings = settings
        self.max_backoff_s = max_backoff_s
        self._local = threading.local()
        self._clients: set = set()
        self._clients_lock = threading.Lock()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = connect(self.settings)
            self._local.client = client
            with self._clients_lock:
                self._clients.add(client)
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
            with self._clients_lock:
                self._clients.discard(client)
            client.disconnect()

    def _insert(self, table: str, columns: str, data: Sequence, columnar: bool) -> None:
        self._client().execute(
            f"INSERT INTO {table} ({columns}) VALUES", list(data), columnar=columnar
        )

    def _retrying(self, table: str, what: str, action):
        """`action()`'s result, retried with backoff until ClickHouse answers."""
        backoff = 0.1
        while True:
            try:
                return action()
            except Exception as error:  # any driver or network error: reconnect and retry
                SINK_RETRIES.labels(table).inc()
                log.warning("%s failed (%s); retrying in %.1fs", what, error, backoff)
                self._drop_client()
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    def write(self, table: str, columns: str, data: Sequence, columnar: bool = False) -> None:
        """Insert `data` (rows, or with `columnar` one list per column), retrying until
        ClickHouse takes them."""
        count = len(data[0]) if columnar and data else len(data)
        if not count:
            return
        started = time.perf_counter()
        what = f"insert of {count} rows into {table}"
        self._retrying(table, what, lambda: self._insert(table, columns, data, columnar))
        SINK_SECONDS.labels(table).observe(time.perf_counter() - started)
        SINK_BATCH.labels(table).observe(count)
        SINK_ROWS.labels(table).inc(count)

    def stored_event_ids(self, event_ids: Sequence[str]) -> dict[str, Stored]:
        """What `event_ids` holds for these ids: the first content stored under each. The
        ids travel as an external table, so a batch of long ids makes no long query."""
        if not event_ids:
            return {}

        def lookup():
            return self._client().execute(
                "SELECT event_id, argMax(fingerprint, precedence), argMax(user_id, precedence), "
                "argMax(source_partition, precedence), argMax(source_offset, precedence) "
                "FROM event_ids WHERE event_id IN (SELECT event_id FROM batch_ids) "
                "GROUP BY event_id",
                external_tables=[
                    {
                        "name": "batch_ids",
                        "structure": [("event_id", "String")],
                        "data": [{"event_id": event_id} for event_id in set(event_ids)],
                    }
                ],
            )

        rows = self._retrying("event_ids", "event id lookup", lookup)
        return {row[0]: Stored(*row[1:]) for row in rows}

    def write_interactions(self, columns: list[list]) -> None:
        """Store `interaction_columns`."""
        self.write("interactions", INTERACTION_COLUMNS, columns, columnar=True)

    def write_event_ids(self, columns: list[list]) -> None:
        """Store `streams.identity.event_id_columns`."""
        self.write("event_ids", EVENT_ID_COLUMNS, columns, columnar=True)

    def write_items(self, rows: Sequence[tuple]) -> None:
        self.write("items", ITEM_COLUMNS, rows)

    def close(self) -> None:
        """Disconnect every thread's connection (the worker is stopping)."""
        with self._clients_lock:
            clients, self._clients = self._clients, set()
        for client in clients:
            client.disconnect()
