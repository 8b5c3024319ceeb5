"""Set-up commands: the local Kafka and ClickHouse, the schema, datasets and model assets."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import console, fail

services_app = typer.Typer(help="The local Kafka and ClickHouse.", no_args_is_help=True)
db_app = typer.Typer(help="The ClickHouse schema.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
assets_app = typer.Typer(help="Model assets (LLM, text encoder).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
    app.add_typer(db_app, name="db")
    app.add_typer(data_app, name="data")
    app.add_typer(assets_app, name="assets")


@services_app.command("start")
def services_start(
    kafka: bool = typer.Option(True, help="Start Kafka."),
    clickhouse: bool = typer.Option(True, help="Start ClickHouse."),
) -> None:
    """Start the local Kafka and ClickHouse (idempotent) and print their addresses."""
    from streamrec.services import LocalServices

    started = time.perf_counter()
    try:
        endpoints = LocalServices(get_settings()).start(kafka=kafka, clickhouse=clickhouse)
    except RuntimeError as error:
        fail(str(error))
    console.print(f"services ready in {time.perf_counter() - started:.1f}s")
    print(json.dumps(endpoints.as_dict(), indent=2))


@services_app.command("stop")
def services_stop() -> None:
    """Stop the local services started from this data directory."""
    from streamrec.services import LocalServices

    LocalServices(get_settings()).stop()
    console.print("services stopped")


@services_app.command("status")
def services_status() -> None:
    """Print what is running, with pids and addresses."""
    from streamrec.services import LocalServices

    print(json.dumps(LocalServices(get_settings()).status(), indent=2, default=str))


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the ClickHouse schema (safe to run again)."""
    from streamrec.db import migrate

    tables = migrate(get_settings())
    console.print(f"schema applied; tables: {', '.join(tables)}")


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k.")]) -> None:
    """Fetch and verify a dataset into the cache."""
    from streamrec.datasets import fetch_dataset

    try:
        path = fetch_dataset(name, get_settings())
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        fail(str(error))
    console.print(f"{name} ready at {path}")


@assets_app.command("fetch")
def assets_fetch() -> None:
    """Fetch the default LLM and text encoder into the cache."""
    from streamrec.assets import fetch_assets

    try:
        paths = fetch_assets(get_settings())
    except RuntimeError as error:
        fail(str(error))
    console.print(f"assets ready: {paths}")
