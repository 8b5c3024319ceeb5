"""ghz, the gRPC load generator, as the serving bench drives it.

ghz is a Go program (`./run bench ...` builds it with `go install` into the cache's
bin/, like grpcurl): a load generator that is not Python does not take the GIL-bound
server's share of the cores at Python speed, and measures the wire as a client in
another language would. It reads the API from proto/ and the requests from a JSON file
(one message per request, taken in turn), and reports its latency percentiles as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bench.results import REPO
from streamrec.settings import Settings

PROTO = REPO / "proto"
RECOMMEND = "streamrec.v1.RecommenderService/Recommend"


def ghz_binary(settings: Settings) -> str:
    """The ghz on PATH, else the one `./run bench` built into the cache."""
    found = shutil.which("ghz") or str(settings.cache_dir / "bin" / "ghz")
    if not os.access(found, os.X_OK):
        raise SystemExit("ghz is not built here: run the bench as `./run bench serving ...`")
    return found


def ghz_version(binary: str) -> str:
    """The ghz module version the binary was built from (Go records it in the binary)."""
    try:
        info = subprocess.run(["go", "version", "-m", binary], capture_output=True, text=True)
    except OSError:
        return "unknown"
    for line in info.stdout.splitlines():
        words = line.split()
        if words[:2] == ["mod", "github.com/bojand/ghz"]:
            return words[2]
    return "unknown"


def pin(pid: int, cores: set[int] | None) -> None:
    """Every thread of process `pid` onto `cores` (threads it starts later inherit it)."""
    if not cores:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cores)
        except ProcessLookupError:  # a thread that just ended
            pass


def write_requests(path: Path, user_ids: list[int], k: int) -> Path:
    """The data file: one Recommend request per user, sent in this order, round robin."""
    path.write_text(json.dumps([{"user_id": user, "k": k} for user in user_ids]))
    return path


def run_ghz(
    binary: str,
    target: str,
    data: Path,
    concurrency: int,
    seconds: float,
    cores: set[int] | None = None,
) -> dict:
    """One ghz run at `concurrency` for `seconds` on one connection; its JSON report."""
    command = [
        binary,
        "--insecure",
        "--import-paths",
        str(PROTO),
        "--proto",
        str(PROTO / "streamrec" / "v1" / "recommender.proto"),
        "--call",
        RECOMMEND,
        "--data-file",
        str(data),
        "--concurrency",
        str(concurrency),
        "--duration",
        f"{seconds}s",
        "--duration-stop",
        "wait",  # the calls in flight at the end finish and count
        "--timeout",
        "10s",
        "--format",
        "json",
        target,
    ]
    if cores:  # from its first thread on
        command = ["taskset", "-c", ",".join(map(str, sorted(cores))), *command]
    done = subprocess.run(command, capture_output=True, timeout=seconds + 120)
    if not done.stdout:
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)


def figures(report: dict) -> dict:
    """p50/p99 in ms, requests per second and errors from a ghz report (latencies in ns)."""
    percentiles = {row["percentage"]: row["latency"] for row in report["latencyDistribution"]}
    codes = report.get("statusCodeDistribution") or {}
    ok = codes.get("OK", 0)
    return {
        "p50_ms": round(percentiles[50] / 1e6, 3),
        "p99_ms": round(percentiles[99] / 1e6, 3),
        "mean_ms": round(report["average"] / 1e6, 3),
        "rps": round(ok / (report["total"] / 1e9), 1),
        "requests": ok,
        "errors": sum(count for code, count in codes.items() if code != "OK"),
    }
