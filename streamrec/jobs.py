"""Job runs: one `job_runs` row per run of any long job, and its Prometheus figures.

Every long job (knowledge, alignment, the online trainer's publish cycles) runs
inside a `JobRecorder`, so ops read every job the same way: `streamrec jobs`,
OpsService, the status page and the alert rules all read this one table.

The row is written when the run starts (status ``running``), rewritten by a
heartbeat thread every `ops.heartbeat_interval_s` with the counts so far
(so a long phase without progress is not mistaken for a dead process), and
written a last time when it ends (``succeeded``; ``failed`` with the error;
``stopped`` when a SIGTERM or Ctrl-C ended it, an operator's decision and not a
failure to alert on). ReplacingMergeTree keeps the newest write per run. A
process killed with SIGKILL never writes its end, so a ``running`` row whose
heartbeat is older than `ops.lost_after_s` is reported as ``lost``.

While it runs, the recorder also keeps the last `ops.log_tail_lines` lines the
process logged and writes them with each heartbeat to `job_logs`, so the status
page shows why a run failed without anyone finding the pod or the log file.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge

from streamrec.db import connect
from streamrec.settings import Settings

log = logging.getLogger(__name__)

RUNNING, SUCCEEDED, FAILED, LOST, STOPPED = "running", "succeeded", "failed", "lost", "stopped"

JOB_COLUMNS = (
    "run_id, kind, status, started_at, finished_at, items_ok, items_failed, "
    "items_skipped, items_per_s, llm_version, error, updated_ms, stats"
)

JOB_LAST_SUCCESS = Gauge(
    "streamrec_job_last_success_timestamp_seconds",
    "Unix time at which the last successful run of this kind ended",
    ["kind"],
)
JOB_DURATION = Gauge(
    "streamrec_job_last_duration_seconds", "Duration of the last finished run", ["kind"]
)
JOB_ITEMS_PER_S = Gauge(
    "streamrec_job_last_items_per_second", "Items per second of the last finished run", ["kind"]
)
JOB_RUNS = Counter("streamrec_job_runs_total", "Finished job runs", ["kind", "status"])
JOB_FAILURES = Counter("streamrec_job_failures_total", "Failed job runs", ["kind"])


class _LogTail(logging.Handler):
    """The last lines logged in this process (any logger at INFO or above)."""

    def __init__(self, lines: int):
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=max(1, lines))
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        self.changed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
            self.changed = True
        except Exception:  # a log line that cannot be formatted must not break the job
            self.handleError(record)

    def text(self) -> str:
        self.changed = False
        return "\n".join(self.lines)


@dataclass
class JobRun:
    """One run as read back from `job_runs` (times are Unix seconds, UTC)."""

    run_id: str
    kind: str
    status: str
    started_at: int
    finished_at: int
    items_ok: int
    items_failed: int
    items_skipped: int
    items_per_s: float
    llm_version: str
    error: str
    updated_ms: int
    stats: str = "{}"  # JSON: a job's own cost figures (the knowledge job's tokens, seconds)

    @property
    def duration_s(self) -> float:
        end = self.finished_at if self.status != RUNNING else int(time.time())
        return max(0, end - self.started_at)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "stats": json.loads(self.stats or "{}"),
            "duration_s": self.duration_s,
        }


def new_run_id(kind: str) -> str:
    """Sortable by start time, unique across processes."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{kind}-{stamp}-{uuid.uuid4().hex[:6]}"


class JobRecorder:
    """Context manager recording one run of `kind`: its row, its counts, its metrics.

    ``with JobRecorder(settings, "knowledge", llm_version=v) as run:
    run.progress(ok=10, skipped=2)``. Counts add up over `progress` calls.
    An exception (KeyboardInterrupt and SystemExit included) marks the run
    failed with the error and is re-raised.
    """

    def __init__(self, settings: Settings, kind: str, llm_version: str = ""):
        if not kind:
            raise ValueError("a job run needs a kind")
        self.settings = settings
        self.kind = kind
        self.llm_version = llm_version or ""
        self.run_id = new_run_id(kind)
        self.ok = self.failed = self.skipped = 0
        self.status = RUNNING
        self.error = ""
        # A job's own figures, written with every heartbeat and at the end (`job_runs.stats`).
        self.stats: dict = {}
        self._started = 0.0
        self._finished = 0.0
        self._client = None
        # One writer at a time: the job's thread and the heartbeat share the client.
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._tail = _LogTail(settings.ops.log_tail_lines)

    def __enter__(self) -> JobRecorder:
        self._started = time.time()
        logging.getLogger().addHandler(self._tail)
        self._write()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"job-heartbeat-{self.run_id}", daemon=True
        )
        self._heartbeat.start()
        return self

    def progress(self, ok: int = 0, failed: int = 0, skipped: int = 0) -> None:
        """Add to the counts (the heartbeat writes them)."""
        self.ok += ok
        self.failed += failed
        self.skipped += skipped

    def _beat(self) -> None:
        while not self._ended.wait(self.settings.ops.heartbeat_interval_s):
            try:
                self._write()
            except Exception as error:  # the next beat or the final write may get through
                log.warning("job run %s: heartbeat not written: %s", self.run_id, error)

    def _stop_heartbeat(self) -> None:
        self._ended.set()
        if self._heartbeat is not None:
            self._heartbeat.join()

    def fail(self, error: str) -> None:
        """Mark the run failed without raising (a job that handles its own error)."""
        self.status, self.error = FAILED, error

    @property
    def items_per_s(self) -> float:
        elapsed = (self._finished or time.time()) - self._started
        return (self.ok / elapsed) if elapsed > 0 else 0.0

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop_heartbeat()
        self._finished = time.time()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.status, self.error = STOPPED, "stopped by a signal before it finished"
        elif exc_type is not None:
            self.status = FAILED
            self.error = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
        elif self.status == RUNNING:
            self.status = SUCCEEDED
        logging.getLogger().removeHandler(self._tail)
        if self.status == FAILED:
            self._tail.lines.append(f"run failed: {self.error}")
            self._tail.changed = True
        try:
            self._write()
        finally:
            self._update_metrics()
            if self._client is not None:
                self._client.disconnect()
        return False

    def _update_metrics(self) -> None:
        JOB_RUNS.labels(self.kind, self.status).inc()
        JOB_DURATION.labels(self.kind).set(self._finished - self._started)
        JOB_ITEMS_PER_S.labels(self.kind).set(self.items_per_s)
        if self.status == SUCCEEDED:
            JOB_LAST_SUCCESS.labels(self.kind).set(self._finished)
        elif self.status == FAILED:
            JOB_FAILURES.labels(self.kind).inc()

    def _write(self) -> None:
        now = time.time()
        row = (
            self.run_id,
            self.kind,
            self.status,
            int(self._started),
            int(self._finished or now),
            self.ok,
            self.failed,
            self.skipped,
            float(self.items_per_s),
            self.llm_version,
            self.error,
            int(now * 1000),
            json.dumps(self.stats),
        )
        with self._lock:
            if self._client is None:
                self._client = connect(self.settings)
            self._client.execute(f"INSERT INTO job_runs ({JOB_COLUMNS}) VALUES", [row])
            if self._tail.changed:
                self._client.execute(
                    "INSERT INTO job_logs (run_id, kind, tail, updated_ms) VALUES",
                    [(self.run_id, self.kind, self._tail.text(), int(now * 1000))],
                )


_SELECT = (
    "SELECT run_id, kind, status, toUnixTimestamp(started_at), toUnixTimestamp(finished_at), "
    "items_ok, items_failed, items_skipped, items_per_s, llm_version, error, updated_ms, stats "
    "FROM job_runs FINAL"
)


def _as_run(row: tuple, lost_after_s: float) -> JobRun:
    run = JobRun(*row)
    if run.status == RUNNING and time.time() - run.updated_ms / 1000 > lost_after_s:
        run.status = LOST
    return run


def list_runs(
    settings: Settings, kind: str | None = None, status: str | None = None, limit: int | None = None
) -> list[JobRun]:
    """The newest runs first; `status` filters on the reported status (``lost`` included)."""
    limit = settings.ops.list_limit if limit is None else limit
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    query = _SELECT + (" WHERE kind = %(kind)s" if kind else "")
    query += " ORDER BY started_at DESC, run_id DESC"
    client = connect(settings)
    try:
        rows = client.execute(query, {"kind": kind} if kind else {})
    finally:
        client.disconnect()
    runs = [_as_run(row, settings.ops.lost_after_s) for row in rows]
    if status:
        runs = [run for run in runs if run.status == status]
    return runs[:limit]


def get_run(settings: Settings, run_id: str) -> JobRun | None:
    client = connect(settings)
    try:
        rows = client.execute(_SELECT + " WHERE run_id = %(run_id)s", {"run_id": run_id})
    finally:
        client.disconnect()
    return _as_run(rows[0], settings.ops.lost_after_s) if rows else None


def get_log_tail(settings: Settings, run_id: str) -> str:
    """The last lines the run logged ("" when it logged nothing)."""
    client = connect(settings)
    try:
        rows = client.execute(
            "SELECT argMax(tail, updated_ms) FROM job_logs WHERE run_id = %(run_id)s",
            {"run_id": run_id},
        )
    finally:
        client.disconnect()
    return rows[0][0] if rows else ""


def recent_runs_by_kind(settings: Settings, per_kind: int) -> dict[str, list[JobRun]]:
    """Per kind, its newest `per_kind` runs, oldest first (the page's timelines)."""
    client = connect(settings)
    try:
        rows = client.execute(
            _SELECT + " ORDER BY kind, started_at DESC, run_id DESC LIMIT %(n)s BY kind",
            {"n": per_kind},
        )
    finally:
        client.disconnect()
    runs: dict[str, list[JobRun]] = {}
    for row in rows:
        run = _as_run(row, settings.ops.lost_after_s)
        runs.setdefault(run.kind, []).insert(0, run)
    return runs


def kind_summaries(settings: Settings) -> list[dict]:
    """Per kind: last success time, last run's duration and items/s, runs and failures.

    What the status page's /metrics exports, so that short-lived jobs (a
    Kubernetes CronJob) are still seen by Prometheus after their process exits.
    """
    client = connect(settings)
    try:
        rows = client.execute(
            "SELECT kind, "
            "maxIf(toUnixTimestamp(finished_at), status = 'succeeded'), "
            "argMax(toUnixTimestamp(finished_at) - toUnixTimestamp(started_at), started_at), "
            "argMax(items_per_s, started_at), "
            "countIf(status = 'succeeded'), countIf(status = 'failed'), count() "
            "FROM job_runs FINAL GROUP BY kind ORDER BY kind"
        )
    finally:
        client.disconnect()
    keys = ("kind", "last_success", "last_duration_s", "last_items_per_s", "succeeded", "failed")
    return [dict(zip(keys + ("runs",), row, strict=True)) for row in rows]
