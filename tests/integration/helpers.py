"""Test data written straight into ClickHouse (the launcher and polling live in
`streamrec.services.children`)."""

from __future__ import annotations

import time

from streamrec.db import connect


def store_history(settings, user_id: int, items: list[int], prefix: str) -> None:
    """Write one user's clicks straight into ClickHouse, a millisecond apart (oldest first),
    as the stream worker would have stored them."""
    client = connect(settings)
    start = int(time.time() * 1000) - 60_000
    rows = [
        (f"{prefix}-{step}", user_id, item, 1, None, start // 1000, start + step)
        + ([], [], 0, step, 0)
        for step, item in enumerate(items)
    ]
    client.execute(
        "INSERT INTO interactions (event_id, user_id, item_id, event_type, value, timestamp, "
        "timestamp_ms, context_keys, context_values, source_partition, source_offset, "
        "ingested_ms) VALUES",
        rows,
    )
    client.disconnect()
