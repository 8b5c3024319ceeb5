"""Start, find and stop a background server process by PID, and pick free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from streamrec.settings import Settings


class MissingTool(RuntimeError):
    """A program the local services need is not installed."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on or holds the port. Connections lingering in TIME_WAIT after a
    server stopped do not count: servers bind with SO_REUSEADDR, so a restart keeps its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections there: a cheap probe before a real client."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port(preferred: int = 0, host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """`preferred` when it is free, otherwise a port the kernel says is free."""
    taken = taken or set()
    if preferred and preferred not in taken and port_is_free(preferred, host):
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def pid_alive(pid: int | None, command_contains: str = "") -> bool:
    """The process runs (a zombie counts as gone); with `command_contains`, only when its
    command line holds that text.

    A PID from an old state file may belong to an unrelated process by now (after a
    reboot): matching our own config path keeps us from signalling that one.
    """
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and command_contains in _command_line(pid)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def spawn(command: list[str], log_file: Path, environment: dict[str, str] | None = None) -> int:
    """Start `command` in its own session (it outlives this process), output to `log_file`;
    `environment` adds to this process's variables."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **environment} if environment else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    # Popen returns while exec may still be setting up the new program, when its command line
    # reads empty: wait for it, so that the PID matches its command line from the first check.
    deadline = time.monotonic() + 5.0
    while not _command_line(process.pid) and process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return process.pid


def wait_until(check: Callable[[], bool], timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Poll `check` until it holds; gives up early when the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return False
        time.sleep(0.1)
    return False


def tail(path: Path, chars: int = 2000) -> str:
    """The end of a log file, for error messages."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def stop_pid(pid: int | None, command_contains: str, timeout_s: float, group: bool = False) -> None:
    """SIGTERM, wait, then SIGKILL: nothing is left behind, and no other process is hit.

    With `group`, the signals go to the process group the PID leads (one `spawn` made), so
    that the children it runs (a scheduled job) are asked to stop as well."""
    if not pid_alive(pid, command_contains):
        return
    send = os.killpg if group else os.kill
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            send(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                _reap(pid)
                return
            time.sleep(0.05)


def _reap(pid: int, timeout_s: float = 5.0) -> None:
    """Collect the exit status when the server is our own child, so no zombie stays behind
    (init reaps the others). A JVM's main thread shows as a zombie while its other threads
    still exit, and only then can it be collected: hence the short wait."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            return
        time.sleep(0.02)


class LocalServer:
    """What the local Kafka and ClickHouse share: a home folder, a PID, a readiness check.

    A state entry (a dict kept in the services state file) holds the PID and ports.
    """

    name: str

    def __init__(self, settings: Settings):
        self.settings = settings
        # Absolute, so the server's command line names it whatever the caller's cwd.
        self.home = (settings.services_dir / self.name).absolute()

    def start(self, previous: dict | None) -> dict:
        """Start the server (reusing the previous ports when free); returns its entry."""
        raise NotImplementedError

    def healthy(self, entry: dict) -> bool:
        """Our process runs and answers."""
        raise NotImplementedError

    def running(self, entry: dict) -> bool:
        return pid_alive(entry.get("pid"), str(self.home))

    def stop(self, entry: dict) -> None:
        stop_pid(entry.get("pid"), str(self.home), timeout_s=30.0)

    def _await_ready(self, entry: dict, timeout_s: float, log_file: Path) -> dict:
        if wait_until(lambda: self.healthy(entry), timeout_s, lambda: self.running(entry)):
            return entry
        what = f"was not ready in {timeout_s:.0f}s" if self.running(entry) else "exited"
        self.stop(entry)
        raise RuntimeError(f"{self.name} {what}; end of {log_file}:\n{tail(log_file)}")
