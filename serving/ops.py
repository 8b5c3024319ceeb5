"""Ops: OpsService over gRPC, and the status web page (its HTML is serving/ops_page.py).

Both read `job_runs` through `streamrec.jobs` and the knowledge coverage through
`streamrec.coverage`, so what ops see here is what `streamrec jobs list` prints. The
page also serves `/metrics`: the job figures computed from `job_runs` and the coverage
figures, so a job that ran as a short-lived process (a Kubernetes CronJob) is still seen
by Prometheus and its alert rules; and it runs the sampler of lag and dead letters
(`streamrec.ops_samples`) whose history it draws.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from serving.kit import InvalidRequest, answer, check_deadline
from serving.ops_page import gather, render_page, render_run
from streamrec.coverage import Coverage, knowledge_coverage
from streamrec.jobs import (
    FAILED,
    LOST,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    JobRun,
    get_log_tail,
    get_run,
    kind_summaries,
    list_runs,
)
from streamrec.ops_samples import Sampler
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


def coverage_to_proto(coverage: Coverage) -> ops_pb2.KnowledgeCoverage:
    pending = coverage.pending_requests
    return ops_pb2.KnowledgeCoverage(
        llm_version=coverage.llm_version,
        prompt_version=coverage.prompt_version,
        catalog_items=coverage.catalog_items,
        covered_items=coverage.covered_items,
        pending_requests=-1 if pending is None else pending,
        failed_items=coverage.failed_items,
        oldest_missing_age_s=coverage.oldest_missing_age_s,
        ratio=coverage.ratio,
        failures=[
            ops_pb2.KnowledgeFailure(
                item_id=f.item_id, reason=f.reason, run_id=f.run_id, failed_ms=f.failed_ms
            )
            for f in coverage.failures
        ],
    )


class OpsServicer(ops_pb2_grpc.OpsServiceServicer):
    """ListJobs, GetJob and GetCoverage; ClickHouse reads run in a thread, off the event
    loop. String fields are bounded by the serving kit (`serving.max_string_length`), and a
    failed read is answered INTERNAL without its text (the server log has it)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    async def ListJobs(self, request, context):
        return await answer("ListJobs", self._list, request, context)

    async def GetJob(self, request, context):
        return await answer("GetJob", self._get, request, context)

    async def GetCoverage(self, request, context):
        return await answer("GetCoverage", self._coverage, request, context)

    async def _coverage(self, request, context):
        check_deadline(context)
        coverage = await asyncio.to_thread(knowledge_coverage, self.settings)
        return coverage_to_proto(coverage)

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


class CoverageCollector:
    """The knowledge coverage figures (`streamrec.coverage`), read at each scrape."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self):
        coverage = knowledge_coverage(self.settings)
        figures = (
            ("streamrec_knowledge_catalog_items", "Items in the catalog", coverage.catalog_items),
            (
                "streamrec_knowledge_covered_items",
                "Catalog items with knowledge for the current LLM and prompt versions",
                coverage.covered_items,
            ),
            (
                "streamrec_knowledge_coverage_ratio",
                "Share of the catalog with current knowledge",
                coverage.ratio,
            ),
            (
                "streamrec_knowledge_failed_items",
                "Items lacking knowledge whose last knowledge attempt failed",
                coverage.failed_items,
            ),
            (
                "streamrec_knowledge_oldest_missing_age_seconds",
                "Seconds since the catalog update of the oldest item lacking knowledge",
                coverage.oldest_missing_age_s,
            ),
        )
        for name, text, value in figures:
            family = GaugeMetricFamily(name, text)
            family.add_metric([], value)
            yield family
        if coverage.pending_requests is not None:
            pending = GaugeMetricFamily(
                "streamrec_knowledge_pending_requests",
                "Requests on knowledge-requests the knowledge job has not read yet",
            )
            pending.add_metric([], coverage.pending_requests)
            yield pending


def status_page_app(settings: Settings) -> web.Application:
    """`/` the page, `/runs/{run_id}` one run, `/api/runs` and `/api/coverage` as JSON,
    `/metrics` the job and coverage figures; the lag and dead-letter sampler runs with it."""
    registry = CollectorRegistry()
    registry.register(JobRunsCollector(settings))
    registry.register(CoverageCollector(settings))
    sampler = Sampler(settings)

    async def read(what: str, function, *args):
        try:
            return await asyncio.to_thread(function, settings, *args)
        except Exception as error:  # ClickHouse down: say so instead of a bare 500
            log.warning("cannot read %s: %s", what, error)
            raise web.HTTPServiceUnavailable(text=f"cannot read {what}: {error}") from error

    async def page(request: web.Request) -> web.Response:
        data = await read("job runs", gather, request.query.get("kind") or None)
        return web.Response(text=render_page(data, settings), content_type="text/html")

    async def run_page(request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        run = await read("job runs", get_run, run_id)
        if run is None:
            raise web.HTTPNotFound(text=f"no job run {run_id}")
        tail = await read("job logs", get_log_tail, run_id)
        return web.Response(
            text=render_run(run, tail, settings.ops.page_refresh_s), content_type="text/html"
        )

    async def api_runs(request: web.Request) -> web.Response:
        runs = await read("job runs", list_runs, request.query.get("kind") or None)
        return web.json_response([run.as_dict() for run in runs])

    async def api_coverage(request: web.Request) -> web.Response:
        return web.json_response((await read("coverage", knowledge_coverage)).as_dict())

    async def metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start_sampler(app: web.Application) -> None:
        sampler.start()

    async def stop_sampler(app: web.Application) -> None:
        await asyncio.to_thread(sampler.stop)

    app = web.Application()
    app.add_routes(
        [
            web.get("/", page),
            web.get("/runs/{run_id}", run_page),
            web.get("/api/runs", api_runs),
            web.get("/api/coverage", api_coverage),
            web.get("/metrics", metrics),
        ]
    )
    app.on_startup.append(start_sampler)
    app.on_cleanup.append(stop_sampler)
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
