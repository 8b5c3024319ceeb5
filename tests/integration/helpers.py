"""Settings for an in-process server and test data written straight into ClickHouse (the
launcher and polling live in `streamrec.services.children`)."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

import grpc

from serving.server import start_server
from streamrec.db import connect, migrate
from streamrec.settings import Settings


def server_settings(
    base: Settings, folder: Path, prefix: str, serving: dict | None = None, **sections: dict
) -> Settings:
    """`base` for a server started in the test: a new database `<prefix>_<suffix>` (created),
    a registry under `folder`, any port, a fast registry poll, no reload topic and no
    history-updates topic (the tests store histories straight into ClickHouse, so only the
    cache's TTL brings them in); `serving` and `sections` (a settings section's name ->
    values) change more."""
    settings = base.model_copy(
        update={
            "clickhouse": base.clickhouse.model_copy(
                update={"database": f"{prefix}_{uuid.uuid4().hex[:8]}"}
            ),
            "registry": base.registry.model_copy(update={"root": str(folder / "registry")}),
            "serving": base.serving.model_copy(
                update={
                    "port": 0,
                    "reload_poll_s": 0.3,
                    "reload_from_topic": False,
                    "history_updates_ttl_s": 0,
                    "max_request_history": 40,
                    **(serving or {}),
                }
            ),
            **{
                name: getattr(base, name).model_copy(update=values)
                for name, values in sections.items()
            },
        }
    )
    migrate(settings)
    return settings


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


@contextlib.asynccontextmanager
async def served(settings: Settings, servicers: dict):
    """`servicers` served on loopback, and a channel to them: (server, channel); the
    channel is closed and the server stopped after."""
    server, port = await start_server(settings, servicers)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.stop(None)
