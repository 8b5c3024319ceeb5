"""`streamrec status` and `streamrec down`: the running system that `up` left, process by
process (found by the PID files under the data dir), and its clean stop."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import console


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(down)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Each process of the system: PID, alive, health, consumer lag, the model version served."""
    report = system_report(get_settings())
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("process", "pid", "alive", "health", "lag (messages)", "detail")
    for name, row in {**report["services"], **report["planes"]}.items():
        lag = row.get("lag_messages")
        table.add_row(
            name,
            str(row.get("pid") or ""),
            "[green]yes[/green]" if row["alive"] else "[red]no[/red]",
            row.get("health") or "",
            "" if lag is None else f"{lag:,}",
            row.get("detail", ""),
        )
    Console(width=200).print(table)
    registry = report["registry"]
    print(f"registry: latest {registry['family']} version {registry['latest'] or 'none'}")
    for failed in registry["failed"]:
        print(f"  refused by a server: {failed['version']} ({failed['reason']})")


def system_report(settings) -> dict:
    """What `status` shows, as plain data (the services, each plane, the registry)."""
    from streamrec.services import LocalServices
    from streamrec.services.planes import PLANES, PlaneProcesses

    services = {
        name: {
            "pid": entry.get("pid"),
            "alive": entry["running"],
            "health": "ok" if entry["running"] else None,
            "detail": _address(entry),
        }
        for name, entry in LocalServices(settings).status().items()
    }
    kafka_up = bool(settings.kafka.bootstrap_servers) or services["kafka"]["alive"]
    database_up = bool(settings.clickhouse.host) or services["clickhouse"]["alive"]
    processes = PlaneProcesses(settings)
    planes = {}
    for plane in PLANES:
        alive = processes.alive(plane)
        row = {"pid": processes.pid(plane), "alive": alive, "health": None}
        row.update(_plane_checks(settings, plane.name, alive, kafka_up, database_up))
        row["log"] = str(processes.log_file(plane))
        planes[plane.name] = row
    return {"services": services, "planes": planes, "registry": _registry_summary(settings)}


def _plane_checks(settings, name: str, alive: bool, kafka_up: bool, database_up: bool) -> dict:
    """A plane's own health and consumer lag (unknown, None, where it cannot be asked)."""
    from streamrec.services.probes import consumer_lag, served_model, web_health

    def lag(group: str, topic: str) -> int | None:
        return consumer_lag(settings, group, topic) if kafka_up else None

    kafka = settings.kafka
    if name == "stream-worker":
        web = settings.streams
        return {
            "health": web_health(web.web_host, web.web_port) if alive else None,
            "lag_messages": lag(web.app_id, kafka.interactions_topic),
            "detail": f"group {web.app_id} on {kafka.interactions_topic}",
        }
    if name == "trainer":
        # The trainer commits its offsets when it publishes a version: its lag counts the
        # messages of examples no published version has learnt from yet.
        asked = alive and database_up
        run = _running_job(settings, "trainer") if asked else None
        return {
            # In a publish cycle (its job run `running`, heartbeat fresh); "starting" while
            # it loads or waits for a version to warm-start from.
            "health": ("ok" if run else "starting") if asked else None,
            "lag_messages": lag(settings.workers.trainer_group, kafka.training_examples_topic),
            "detail": f"job {run.run_id}" if run else "",
        }
    if name == "server":
        health, version = served_model(settings) if alive else (None, None)
        return {
            "health": health,
            "model_version": version,
            "detail": f"serves {version or 'no model yet'}" if health else "",
        }
    return {"health": "ok" if alive else None, "detail": ""}


def _running_job(settings, kind: str):
    """The newest running job run of this kind (a lost one does not count); None when there
    is none or ClickHouse cannot say."""
    from clickhouse_driver.errors import Error as ClickHouseError

    from streamrec.jobs import RUNNING, list_runs

    try:
        runs = list_runs(settings, kind=kind, status=RUNNING, limit=1)
    except (ClickHouseError, OSError):
        return None
    return runs[0] if runs else None


def _registry_summary(settings) -> dict:
    """The newest version of the served family in the registry, and the versions a server
    refused (did not load, or failed its smoke check) with their reasons."""
    from dataclasses import asdict

    from streamrec.registry import ModelRegistry

    family = settings.recommender.family
    registry = ModelRegistry.from_settings(settings)
    latest = registry.latest(family)
    return {
        "family": family,
        "latest": latest.version if latest else None,
        "failed": [asdict(failed) for failed in registry.failed(family)],
    }


def _address(entry: dict) -> str:
    if entry.get("bootstrap_servers"):
        return entry["bootstrap_servers"]
    if entry.get("host"):
        return f"{entry['host']}:{entry['port']}"
    return ""


def down() -> None:
    """Stop the system `up` left running: each plane (SIGTERM, then SIGKILL after a wait),
    then the local services."""
    from streamrec.services import LocalServices
    from streamrec.services.planes import PlaneProcesses

    settings = get_settings()
    processes = PlaneProcesses(settings)
    running = processes.running()
    processes.stop_all()
    for name, pid in running.items():
        console.print(f"stopped {name} (pid {pid})")
    if not running:
        console.print("no plane was running")
    LocalServices(settings).stop()
    console.print("services stopped")
