"""Benchmark results as committed data, each with what made it.

A bench writes its payload with `write_result`, which wraps it with the command, the git
commit, the UTC date and the machine (cores, load averages at the bench's start and end),
so that a figure quoted in a document can be checked against a file and rerun. Results
kept for the project live under `bench/results/<bench>/<name>.json`; `bench/RESULTS.md`
is generated from them (`python -m bench.results_md`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
REQUIRED = ("command", "commit", "date", "machine")
MACHINE_REQUIRED = ("cores", "load_average_start", "load_average_end")
# Settings that change what a bench measures travel with its result; secrets never do.
_SECRET = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


def command_line(argv: list[str] | None = None) -> str:
    """The command as one would type it in the repository root (`python -m bench.x ...`)."""
    if argv is None:
        argv = list(sys.argv)
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is not None and spec.name != "__main__":  # started with `python -m`
            return shlex.join(["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]])
    argv = list(argv)
    script = Path(argv[0]).resolve() if argv and argv[0] else None
    if script is not None and script.is_file() and script.is_relative_to(REPO):
        argv[0] = str(script.relative_to(REPO))
    return shlex.join(["python", *argv])


def git_commit() -> tuple[str, bool]:
    """HEAD's hash, and whether tracked files differ from it; ("unknown", True) outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return head, dirty


# Taken when a bench imports this module, i.e. as it starts: the load its run began under,
# and the code it ran (HEAD may move while a long bench runs).
_STARTED = time.monotonic()
_STARTED_AT = datetime.datetime.now(datetime.UTC)
_LOAD_AT_START = os.getloadavg()
_COMMIT_AT_START = git_commit()


def machine() -> dict:
    """Cores, load averages (1, 5, 15 min) at the start and now, and the platform."""
    info = {
        "cores": os.cpu_count(),
        "load_average_start": [round(value, 2) for value in _LOAD_AT_START],
        "load_average_end": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")  # only when the bench used it: no import for the record
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return info


def provenance(argv: list[str] | None = None) -> dict:
    commit, dirty = _COMMIT_AT_START
    return {
        "command": command_line(argv),
        "environment": {
            name: value
            for name, value in sorted(os.environ.items())
            if name.startswith("STREAMREC_") and not _SECRET.search(name)
        },
        "commit": commit,
        "dirty": dirty,
        "date": _STARTED_AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - _STARTED, 1),
        "machine": machine(),
    }


def write_result(path: str | Path, payload, argv: list[str] | None = None) -> Path:
    """Write `payload` (the bench's own report) to `path` under its provenance; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**provenance(argv), "result": payload}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def problems(record: dict) -> list[str]:
    """What a committed result lacks to be checked and rerun (empty when nothing)."""
    found = [f"no {key}" for key in (*REQUIRED, "result") if not record.get(key)]
    if record.get("commit") and not re.fullmatch(r"[0-9a-f]{40}", str(record["commit"])):
        found.append(f"commit {record['commit']!r} is not a git hash")
    info = record.get("machine")
    if isinstance(info, dict):
        found += [f"no machine.{key}" for key in MACHINE_REQUIRED if info.get(key) is None]
    elif info:
        found.append("machine is not an object")
    return found


def committed(directory: Path = RESULTS_DIR) -> list[Path]:
    """Every result kept for the project, in a stable order."""
    return sorted(directory.rglob("*.json"))
