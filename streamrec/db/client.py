"""A clickhouse-driver client pointed at the configured (or local) server."""

from __future__ import annotations

from clickhouse_driver import Client

from streamrec.services import clickhouse_address
from streamrec.settings import Settings


def connect(settings: Settings, database: str | None = None) -> Client:
    """A native-protocol client; `database=""` connects without selecting one."""
    host, port = clickhouse_address(settings)
    return Client(
        host=host,
        port=port,
        user=settings.clickhouse.user,
        password=settings.clickhouse.password,
        database=settings.clickhouse.database if database is None else database or "default",
        connect_timeout=settings.clickhouse.connect_timeout_s,
        settings={"insert_block_size": 100_000},
    )


def count_rows(settings: Settings, table: str, final: bool = False) -> int:
    """Rows in `table`; with `final`, after ReplacingMergeTree's deduplication."""
    client = connect(settings)
    try:
        return client.execute(f"SELECT count() FROM {table}{' FINAL' if final else ''}")[0][0]
    finally:
        client.disconnect()
