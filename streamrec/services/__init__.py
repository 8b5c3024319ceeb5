"""The local Kafka and ClickHouse: one launcher for the CLI, `streamrec up` and the tests.

What runs is recorded in `<data_dir>/services/state.json` (PIDs, ports,
addresses); every other part of the system finds the broker and the database
there unless the settings name real ones.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from streamrec.services.clickhouse import PREFERRED_PORT as CLICKHOUSE_PORT
from streamrec.services.clickhouse import LocalClickHouse
from streamrec.services.kafka import LocalKafka
from streamrec.services.process import LocalServer, MissingTool, free_port
from streamrec.settings import Settings

__all__ = [
    "LocalServices",
    "MissingTool",
    "ServiceEndpoints",
    "clickhouse_address",
    "free_port",
    "kafka_bootstrap",
]


@dataclass(frozen=True)
class ServiceEndpoints:
    """Where the local services listen; None for one that was not started."""

    kafka_bootstrap_servers: str | None
    clickhouse_host: str | None
    clickhouse_port: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def _state_file(settings: Settings) -> Path:
    return settings.services_dir / "state.json"


def _read_state(settings: Settings) -> dict:
    path = _state_file(settings)
    return json.loads(path.read_text()) if path.exists() else {}


class LocalServices:
    """Start, stop and report the local services of one data directory."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.servers: dict[str, LocalServer] = {
            "kafka": LocalKafka(settings),
            "clickhouse": LocalClickHouse(settings),
        }

    @contextmanager
    def _locked(self) -> Iterator[dict]:
        """The state, held against a concurrent start or stop on the same data directory."""
        self.settings.services_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.services_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield _read_state(self.settings)

    def _write_state(self, state: dict) -> None:
        path = _state_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def start(self, kafka: bool = True, clickhouse: bool = True) -> ServiceEndpoints:
        """Start what is not running yet; a healthy service is reused (idempotent)."""
        wanted = [name for name, on in (("kafka", kafka), ("clickhouse", clickhouse)) if on]
        with self._locked() as state:
            for name in wanted:
                server, entry = self.servers[name], state.get(name) or {}
                if entry.get("running") and server.healthy(entry):
                    continue
                # A hung or half-dead earlier run goes first; its ports are preferred again
                # so that clients which knew the old address find the new server.
                server.stop(entry)
                state[name] = {**server.start(entry), "running": True}
                self._write_state(state)
        return self.endpoints()

    def stop(self) -> None:
        """Stop every service of this data directory; its ports are kept for the next start."""
        with self._locked() as state:
            for name, server in self.servers.items():
                if name in state:
                    server.stop(state[name])
                    state[name]["running"] = False
            if state:
                self._write_state(state)

    def status(self) -> dict:
        """Per service: its state entry, with `running` true when it answers now."""
        state = _read_state(self.settings)
        return {
            name: {**state.get(name, {}), "running": server.healthy(state.get(name, {}))}
            for name, server in self.servers.items()
        }

    def endpoints(self) -> ServiceEndpoints:
        """The addresses recorded for this data directory."""
        state = _read_state(self.settings)
        kafka, clickhouse = state.get("kafka", {}), state.get("clickhouse", {})
        return ServiceEndpoints(
            kafka_bootstrap_servers=kafka.get("bootstrap_servers"),
            clickhouse_host=clickhouse.get("host"),
            clickhouse_port=clickhouse.get("port"),
        )

    def connected_settings(self) -> Settings:
        """These settings with the running services' addresses filled in, for code (and child
        processes) that must not depend on the state file."""
        endpoints, base = self.endpoints(), self.settings
        return base.model_copy(
            update={
                "kafka": base.kafka.model_copy(
                    update={"bootstrap_servers": endpoints.kafka_bootstrap_servers or ""}
                ),
                "clickhouse": base.clickhouse.model_copy(
                    update={
                        "host": endpoints.clickhouse_host or "",
                        "port": endpoints.clickhouse_port or 0,
                    }
                ),
            }
        )


def kafka_bootstrap(settings: Settings) -> str:
    """The configured brokers, or the local broker's address."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers
    entry = _read_state(settings).get("kafka", {})
    if not entry.get("running"):
        raise RuntimeError(
            "no Kafka: set STREAMREC_KAFKA__BOOTSTRAP_SERVERS or run `streamrec services start`"
        )
    return entry["bootstrap_servers"]


def clickhouse_address(settings: Settings) -> tuple[str, int]:
    """The configured ClickHouse (host, native port), or the local server's."""
    if settings.clickhouse.host:
        return settings.clickhouse.host, settings.clickhouse.port or CLICKHOUSE_PORT
    entry = _read_state(settings).get("clickhouse", {})
    if not entry.get("running"):
        raise RuntimeError(
            "no ClickHouse: set STREAMREC_CLICKHOUSE__HOST or run `streamrec services start`"
        )
    return entry["host"], entry["port"]
