"""Ops: OpsService over gRPC, and a small status web page of recent job runs (and of the
model versions servers refused).

Both read `job_runs` through `streamrec.jobs`, so what ops see here is what
`streamrec jobs list` prints. The page also serves `/metrics`: the job figures
computed from `job_runs`, so a job that ran as a short-lived process (a
Kubernetes CronJob) is still seen by Prometheus and its alert rules.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.kit import InvalidRequest, answer, check_deadline
from streamrec.jobs import (
    FAILED,
    LOST,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    JobRun,
    get_run,
    kind_summaries,
    list_runs,
)
from streamrec.registry import FailedVersion, ModelRegistry
from streamrec.settings import Settings
from streamrec.v1 import ops_pb2, ops_pb2_grpc

log = logging.getLogger(__name__)

STATUS_TO_PROTO = {
    RUNNING: ops_pb2.JOB_STATUS_RUNNING,
    SUCCEEDED: ops_pb2.JOB_STATUS_SUCCEEDED,
    FAILED: ops_pb2.JOB_STATUS_FAILED,
    LOST: ops_pb2.JOB_STATUS_LOST,
    STOPPED: ops_pb2.JOB_STATUS_STOPPED,
}
# ListJobs refuses larger pages: a page is meant for eyes, not for exports.
MAX_LIST_LIMIT = 1000


def run_to_proto(run: JobRun) -> ops_pb2.JobRun:
    return ops_pb2.JobRun(
        run_id=run.run_id,
        kind=run.kind,
        status=STATUS_TO_PROTO.get(run.status, ops_pb2.JOB_STATUS_UNSPECIFIED),
        started_ms=run.started_at * 1000,
        finished_ms=run.finished_at * 1000 if run.status != RUNNING else 0,
        items_ok=run.items_ok,
        items_failed=run.items_failed,
        items_skipped=run.items_skipped,
        items_per_s=run.items_per_s,
        llm_version=run.llm_version,
        error=run.error,
    )


class OpsServicer(ops_pb2_grpc.OpsServiceServicer):
    """ListJobs and GetJob; ClickHouse reads run in a thread, off the event loop. String
    fields are bounded by the serving kit (`serving.max_string_length`), and a failed read
    is answered INTERNAL without its text (the server log has it)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    async def ListJobs(self, request, context):
        return await answer("ListJobs", self._list, request, context)

    async def GetJob(self, request, context):
        return await answer("GetJob", self._get, request, context)

    async def _list(self, request, context):
        if request.limit < 0 or request.limit > MAX_LIST_LIMIT:
            raise InvalidRequest(
                f"limit must be between 0 (the default page) and {MAX_LIST_LIMIT}, "
                f"got {request.limit}"
            )
        check_deadline(context)
        runs = await asyncio.to_thread(
            list_runs, self.settings, request.kind or None, None, request.limit or None
        )
        return ops_pb2.ListJobsResponse(runs=[run_to_proto(run) for run in runs])

    async def _get(self, request, context):
        if not request.run_id:
            raise InvalidRequest("run_id is empty")
        check_deadline(context)
        run = await asyncio.to_thread(get_run, self.settings, request.run_id)
        if run is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job run {request.run_id}")
        return run_to_proto(run)


def build_servicer(settings: Settings) -> OpsServicer:
    """The server's factory for this service (see `serving.server.SERVICERS`)."""
    return OpsServicer(settings)


class JobRunsCollector:
    """Prometheus figures per job kind, read from `job_runs` at each scrape."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self):
        last_success = GaugeMetricFamily(
            "streamrec_job_last_success_timestamp_seconds",
            "Unix time at which the last successful run of this kind ended",
            labels=["kind"],
        )
        duration = GaugeMetricFamily(
            "streamrec_job_last_duration_seconds", "Duration of the last run", labels=["kind"]
        )
        items_per_s = GaugeMetricFamily(
            "streamrec_job_last_items_per_second",
            "Items per second of the last run",
            labels=["kind"],
        )
        runs = CounterMetricFamily(
            "streamrec_job_runs", "Recorded job runs", labels=["kind", "status"]
        )
        failures = CounterMetricFamily("streamrec_job_failures", "Failed job runs", labels=["kind"])
        for summary in kind_summaries(self.settings):
            kind = summary["kind"]
            if summary["last_success"]:
                last_success.add_metric([kind], summary["last_success"])
            duration.add_metric([kind], summary["last_duration_s"])
            items_per_s.add_metric([kind], summary["last_items_per_s"])
            runs.add_metric([kind, SUCCEEDED], summary["succeeded"])
            runs.add_metric([kind, FAILED], summary["failed"])
            failures.add_metric([kind], summary["failed"])
        yield from (last_success, duration, items_per_s, runs, failures)


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) if seconds else ""


def served_families(settings: Settings) -> list[str]:
    return [settings.recommender.family, settings.genrec.family, settings.recsysllm.family]


def refused_versions(settings: Settings) -> list[FailedVersion]:
    """Versions of the served families that servers refused (`ModelRegistry.failed`)."""
    registry = ModelRegistry.from_settings(settings)
    return [entry for family in served_families(settings) for entry in registry.failed(family)]


def render_refused(refused: list[FailedVersion]) -> str:
    rows = "\n".join(
        f'<tr class="refused" data-version="{html.escape(f"{e.family}/{e.version}")}">'
        + "".join(
            f"<td>{html.escape(cell)}</td>" for cell in (e.family, e.version, e.failed_at, e.reason)
        )
        + "</tr>"
        for e in refused
    )
    body = rows or '<tr><td colspan="4">none</td></tr>'
    return (
        "<h2>Model versions refused by servers</h2>\n"
        "<p>They did not load or failed the smoke check, so no server serves them.</p>\n"
        '<table id="refused"><tr><th>family</th><th>version</th><th>refused (UTC)</th>'
        f"<th>reason</th></tr>\n{body}\n</table>"
    )


def render_page(runs: list[JobRun], refresh_s: int, refused: list[FailedVersion] = ()) -> str:
    """The status page: one table row per run, its status as text and as a colour; then the
    model versions servers refused."""
    header = (
        "<tr><th>run</th><th>kind</th><th>status</th><th>started (UTC)</th><th>duration</th>"
        "<th>ok</th><th>failed</th><th>skipped</th><th>items/s</th><th>LLM</th><th>error</th></tr>"
    )
    rows = []
    for run in runs:
        cells = (
            run.run_id,
            run.kind,
            run.status,
            _when(run.started_at),
            f"{run.duration_s:.0f} s",
            run.items_ok,
            run.items_failed,
            run.items_skipped,
            f"{run.items_per_s:.2f}",
            run.llm_version,
            run.error,
        )
        tds = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
        rows.append(
            f'<tr class="run status-{run.status}" data-run-id="{html.escape(run.run_id)}" '
            f'data-status="{run.status}">{tds}</tr>'
        )
    body = "\n".join(rows) or '<tr><td colspan="11">no runs yet</td></tr>'
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>streamrec jobs</title>
<meta http-equiv="refresh" content="{refresh_s}">
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
tr.status-succeeded td:nth-child(3) {{ color: #17803d; }}
tr.status-failed td:nth-child(3), tr.status-lost td:nth-child(3) {{ color: #c0262d; }}
tr.status-running td:nth-child(3) {{ color: #a66a00; }}
</style></head>
<body><h1>streamrec job runs</h1>
<p>The {len(runs)} newest runs, newest first. Refreshes every {refresh_s} s.</p>
<table id="runs">{header}
{body}
</table>
{render_refused(list(refused))}
</body></html>
"""


def status_page_app(settings: Settings) -> web.Application:
    """`/` the page, `/api/runs` the same runs as JSON, `/metrics` the job figures."""
    registry = CollectorRegistry()
    registry.register(JobRunsCollector(settings))

    async def recent_runs(request: web.Request) -> list[JobRun]:
        try:
            return await asyncio.to_thread(list_runs, settings, request.query.get("kind") or None)
        except Exception as error:  # ClickHouse down: say so instead of a bare 500
            log.warning("cannot read job runs: %s", error)
            raise web.HTTPServiceUnavailable(text=f"cannot read job runs: {error}") from error

    async def page(request: web.Request) -> web.Response:
        runs = await recent_runs(request)
        refused = await asyncio.to_thread(refused_versions, settings)
        return web.Response(
            text=render_page(runs, settings.ops.page_refresh_s, refused), content_type="text/html"
        )

    async def api_runs(request: web.Request) -> web.Response:
        runs = await recent_runs(request)
        return web.Response(
            text=json.dumps([run.as_dict() for run in runs]), content_type="application/json"
        )

    async def metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes(
        [web.get("/", page), web.get("/api/runs", api_runs), web.get("/metrics", metrics)]
    )
    return app


async def start_status_page(settings: Settings) -> tuple[web.AppRunner, int]:
    """Start the page on `ops.page_host:page_port` (0 picks a port); returns the bound port."""
    runner = web.AppRunner(status_page_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, settings.ops.page_host, settings.ops.page_port)
    await site.start()
    port = runner.addresses[0][1]
    log.info("job status page on http://%s:%d/", settings.ops.page_host, port)
    return runner, port


async def run_status_page(settings: Settings) -> None:
    runner, port = await start_status_page(settings)
    print(f"job status page on http://{settings.ops.page_host}:{port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
