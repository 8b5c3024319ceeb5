"""An app's side of the loop, from the terminal: read the history the server reads
(ClickHouse) and ask for a user's recommendations (gRPC); `send` (streams/cli.py) sends
their events."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import fail


def register(app: typer.Typer) -> None:
    app.command()(history)
    app.command()(recommend)


def history(
    user_id: Annotated[int, typer.Argument(help="The user's id.")],
    n: Annotated[int, typer.Option(help="Newest N interactions.")] = 10,
) -> None:
    """The user's newest interactions as stored in ClickHouse (what the server reads)."""
    from rich.console import Console
    from rich.table import Table

    from streamrec.history import HistoryStore
    from streamrec.v1 import events_pb2

    settings = get_settings()
    store = HistoryStore(settings)
    try:
        entries = store.recent(user_id, n)
    finally:
        store.close()
    titles = _titles(settings, [entry.item_id for entry in entries])
    print(f"user {user_id}: newest {len(entries)} interactions, oldest first")
    table = Table()
    for column in ("time (UTC)", "event", "item", "title"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.timestamp_ms / 1000)),
            events_pb2.EventType.Name(entry.event_type).removeprefix("EVENT_TYPE_").lower(),
            str(entry.item_id),
            titles.get(entry.item_id, ""),
        )
    Console(width=200).print(table)


def recommend(
    user_id: Annotated[int, typer.Argument(help="The user's id.")],
    k: Annotated[int, typer.Option(help="How many items.")] = 10,
) -> None:
    """Ask the running gRPC server for the user's top k (their stored history as input)."""
    import grpc
    from rich.console import Console
    from rich.table import Table

    from streamrec.client import RecommenderClient
    from streamrec.services.probes import server_address

    settings = get_settings()
    with RecommenderClient.from_settings(settings, host=server_address(settings)) as client:
        try:
            answer = client.recommend(user_id=user_id, k=k)
        except grpc.RpcError as error:
            fail(f"the server answered {error.code().name}: {error.details()}")
    titles = _titles(settings, answer.item_ids)
    source = (
        f"cold start: popular items{f' ({answer.model_version})' if answer.model_version else ''}"
        if answer.cold_start
        else f"model {answer.model_version}"
    )
    print(f"user {user_id}: top {k} from {source}")
    table = Table()
    for column in ("item", "title", "score"):
        table.add_column(column)
    for item in answer.items:
        table.add_row(str(item.item_id), titles.get(item.item_id, ""), f"{item.score:.3f}")
    Console(width=200).print(table)


def _titles(settings, item_ids: list[int]) -> dict[int, str]:
    """Item titles from the items table, for the ids given."""
    from streamrec.db import connect

    if not item_ids:
        return {}
    client = connect(settings)
    try:
        rows = client.execute(
            "SELECT item_id, title FROM items FINAL WHERE item_id IN %(ids)s",
            {"ids": tuple(item_ids)},
        )
    finally:
        client.disconnect()
    return dict(rows)
