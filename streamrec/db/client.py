"""A clickhouse-driver client pointed at the configured (or local) server."""

from __future__ import annotations

import time

from clickhouse_driver import Client
from clickhouse_driver.connection import Connection

from streamrec.services import clickhouse_address
from streamrec.settings import Settings

# A connection that finished a query this recently is taken to be alive.
PING_AFTER_IDLE_S = 5.0


class _PingWhenIdle(Connection):
    """clickhouse-driver pings the server before every query, a round trip that cost the
    stream worker 9 % of its time (bench/results/ingest-profile.md). A connection that
    was used less than `PING_AFTER_IDLE_S` ago skips it; a connection that died meanwhile
    fails that one query, which the driver answers by disconnecting (the next query
    reconnects) and the sink by retrying."""

    checked_at = 0.0

    def force_connect(self):
        now = time.monotonic()
        if self.connected and now - self.checked_at < PING_AFTER_IDLE_S:
            self.check_query_execution()
        else:
            super().force_connect()
        self.checked_at = now


def connect(settings: Settings, database: str | None = None) -> Client:
    """A native-protocol client; `database=""` connects without selecting one."""
    host, port = clickhouse_address(settings)
    client = Client(
        host=host,
        port=port,
        user=settings.clickhouse.user,
        password=settings.clickhouse.password,
        database=settings.clickhouse.database if database is None else database or "default",
        connect_timeout=settings.clickhouse.connect_timeout_s,
        settings={"insert_block_size": 100_000},
    )
    client.connection.__class__ = _PingWhenIdle  # the client's only connection
    return client


def count_rows(settings: Settings, table: str, final: bool = False) -> int:
    """Rows in `table`; with `final`, after ReplacingMergeTree's deduplication."""
    client = connect(settings)
    try:
        return client.execute(f"SELECT count() FROM {table}{' FINAL' if final else ''}")[0][0]
    finally:
        client.disconnect()
