"""The planes of a running system (`streamrec up`): one background process each, with a PID
file and a log under `<data_dir>/planes/`.

Each plane is `streamrec ARGS` run by this interpreter in its own session, so it outlives
the command that started it (`up --detach`); `streamrec status` finds it by its PID file
and `streamrec down` stops it. A PID is trusted only while that process's command line is
still the plane's, so a stale file never leads to signalling an unrelated process.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.services.children import streamrec_command
from streamrec.services.process import pid_alive, spawn, stop_pid
from streamrec.settings import Settings


@dataclass(frozen=True)
class Plane:
    name: str
    # Arguments of the `streamrec` command that runs it.
    args: tuple[str, ...]
    # Variables added to the environment it inherits from `up`.
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def marker(self) -> str:
        """Text its command line holds (`python -m streamrec.cli ARGS`)."""
        return " ".join(("streamrec.cli", *self.args))


STREAM_WORKER = Plane("stream-worker", ("stream", "worker"))
SERVER = Plane("server", ("serve",))
TRAINER = Plane("trainer", ("worker", "trainer"))
# The daily knowledge job; alignment needs a GPU and stays an explicit `streamrec align`.
# Its metrics port is off: the trainer holds `ops.worker_metrics_port`, and every job the
# scheduler launches records its run in job_runs anyway.
SCHEDULER = Plane(
    "scheduler",
    ("worker", "scheduler", "--no-alignment"),
    {"STREAMREC_OPS__WORKER_METRICS_PORT": "0"},
)
# In start order: the stream worker stores what the server reads.
PLANES = (STREAM_WORKER, SERVER, TRAINER, SCHEDULER)


class PlaneProcesses:
    """Start, find and stop the plane processes of one data directory."""

    def __init__(self, settings: Settings, stop_timeout_s: float = 30.0):
        # Absolute: the files stay found whatever the caller's working directory later.
        self.folder = (settings.data_dir / "planes").absolute()
        self.stop_timeout_s = stop_timeout_s

    def pid_file(self, plane: Plane) -> Path:
        return self.folder / f"{plane.name}.pid"

    def log_file(self, plane: Plane) -> Path:
        return self.folder / f"{plane.name}.log"

    def pid(self, plane: Plane) -> int | None:
        """The PID its file records (alive or not), or None without a file."""
        try:
            return int(self.pid_file(plane).read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self, plane: Plane) -> bool:
        return pid_alive(self.pid(plane), plane.marker)

    def running(self) -> dict[str, int]:
        """The planes whose process runs now, by name, with their PIDs."""
        return {plane.name: self.pid(plane) for plane in PLANES if self.alive(plane)}

    def start(self, plane: Plane) -> int:
        """Start the plane in the background (output appended to its log); its PID."""
        pid = spawn(streamrec_command(*plane.args), self.log_file(plane), plane.environment)
        tmp = self.pid_file(plane).with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        tmp.replace(self.pid_file(plane))
        return pid

    def stop(self, plane: Plane) -> None:
        """SIGTERM to its process group (the jobs it launched too), wait, then SIGKILL."""
        stop_pid(self.pid(plane), plane.marker, self.stop_timeout_s, group=True)
        self.pid_file(plane).unlink(missing_ok=True)

    def stop_all(self) -> None:
        """Stop every plane at once (each shuts down on its own; none waits for another)."""
        with ThreadPoolExecutor(len(PLANES)) as pool:
            list(pool.map(self.stop, PLANES))
