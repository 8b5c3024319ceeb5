"""Job runs on the real ClickHouse: recorder rows, metrics, listing, the jobs CLI."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from streamrec.db import connect, migrate
from streamrec.jobs import (
    FAILED,
    LOST,
    RUNNING,
    STOPPED,
    SUCCEEDED,
    JobRecorder,
    get_run,
    kind_summaries,
    list_runs,
)
from streamrec.services.children import run_streamrec


@pytest.fixture
def job_settings(services):
    """Settings on a database of this test's own, and the environment that selects it."""
    database = f"jobs_{uuid.uuid4().hex[:8]}"
    settings = services.settings.model_copy(deep=True)
    settings.clickhouse.database = database
    migrate(settings)
    environment = {
        **services.environment(),
        "STREAMREC_CLICKHOUSE__HOST": settings.clickhouse.host,
        "STREAMREC_CLICKHOUSE__PORT": str(settings.clickhouse.port),
        "STREAMREC_CLICKHOUSE__DATABASE": database,
    }
    return settings, environment


def test_migrate_gives_an_older_job_runs_table_its_stats_column(job_settings):
    settings, _ = job_settings
    client = connect(settings)
    try:
        client.execute("ALTER TABLE job_runs DROP COLUMN stats")  # as made before the column
        migrate(settings)
        with JobRecorder(settings, "test-stats") as run:
            run.stats = {"prefill_s": 1.5}
        assert json.loads(get_run(settings, run.run_id).stats) == {"prefill_s": 1.5}
    finally:
        client.disconnect()


def _metric(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_successful_run_writes_running_then_succeeded_with_its_counts(job_settings):
    settings, _ = job_settings
    before = _metric("streamrec_job_runs_total", kind="test-ok", status=SUCCEEDED) or 0
    with JobRecorder(settings, "test-ok", llm_version="llm-v1") as run:
        assert get_run(settings, run.run_id).status == RUNNING
        run.progress(ok=7, skipped=2)
        run.progress(ok=3, failed=1)
    stored = get_run(settings, run.run_id)
    assert stored.status == SUCCEEDED
    assert (stored.items_ok, stored.items_failed, stored.items_skipped) == (10, 1, 2)
    assert stored.llm_version == "llm-v1"
    assert stored.error == ""
    assert stored.finished_at >= stored.started_at
    assert stored.items_per_s > 0
    assert _metric("streamrec_job_runs_total", kind="test-ok", status=SUCCEEDED) == before + 1
    assert (
        _metric("streamrec_job_last_success_timestamp_seconds", kind="test-ok") >= stored.started_at
    )


def test_a_raising_job_is_recorded_failed_with_its_error_and_the_error_propagates(job_settings):
    settings, _ = job_settings
    failures = _metric("streamrec_job_failures_total", kind="test-fail") or 0
    with pytest.raises(RuntimeError, match="LLM out of memory"):
        with JobRecorder(settings, "test-fail") as run:
            run.progress(ok=1)
            raise RuntimeError("LLM out of memory")
    stored = get_run(settings, run.run_id)
    assert stored.status == FAILED
    assert stored.error == "RuntimeError: LLM out of memory"
    assert stored.items_ok == 1
    assert _metric("streamrec_job_failures_total", kind="test-fail") == failures + 1


def test_a_run_stopped_by_a_signal_is_recorded_stopped_not_failed(job_settings):
    settings, _ = job_settings
    failures = _metric("streamrec_job_failures_total", kind="test-stop") or 0
    with pytest.raises(KeyboardInterrupt):
        with JobRecorder(settings, "test-stop") as run:
            run.progress(ok=4)
            raise KeyboardInterrupt  # what SIGTERM becomes in the workers
    stored = get_run(settings, run.run_id)
    assert stored.status == STOPPED
    assert stored.items_ok == 4
    assert "stopped" in stored.error
    assert (_metric("streamrec_job_failures_total", kind="test-stop") or 0) == failures
    assert [r.run_id for r in list_runs(settings, status=FAILED)] == []


def test_heartbeat_writes_the_counts_and_a_run_whose_heartbeat_stops_is_lost(job_settings):
    settings, _ = job_settings
    settings.ops.heartbeat_interval_s = 0.2
    recorder = JobRecorder(settings, "test-beat")
    recorder.__enter__()
    recorder.progress(ok=4)
    time.sleep(0.8)
    assert get_run(settings, recorder.run_id).items_ok == 4  # written before the end
    recorder._stop_heartbeat()  # what SIGKILL does to the process: no more writes
    settings.ops.lost_after_s = 0.5
    time.sleep(1.0)
    assert get_run(settings, recorder.run_id).status == LOST
    assert [r.run_id for r in list_runs(settings, status=LOST)] == [recorder.run_id]
    recorder.__exit__(None, None, None)
    assert get_run(settings, recorder.run_id).status == SUCCEEDED


def test_list_is_newest_first_filters_by_kind_and_summaries_count_per_kind(job_settings):
    settings, _ = job_settings
    ids = []
    for kind in ("alpha", "beta", "alpha"):
        with JobRecorder(settings, kind) as run:
            run.progress(ok=1)
        ids.append(run.run_id)
        time.sleep(1.05)  # started_at has one-second resolution
    assert [r.run_id for r in list_runs(settings)] == ids[::-1]
    assert [r.run_id for r in list_runs(settings, kind="alpha")] == [ids[2], ids[0]]
    assert len(list_runs(settings, limit=1)) == 1
    summaries = {s["kind"]: s for s in kind_summaries(settings)}
    assert summaries["alpha"]["succeeded"] == 2 and summaries["beta"]["runs"] == 1
    assert summaries["alpha"]["last_success"] > 0
    client = connect(settings)
    assert client.execute("SELECT count() FROM job_runs FINAL")[0][0] == 3
    client.disconnect()


def _cli(environment: dict, *args: str) -> subprocess.CompletedProcess:
    return run_streamrec("jobs", *args, environment=environment, timeout_s=60)


def test_jobs_list_and_show_from_the_command_line(job_settings):
    settings, environment = job_settings
    with JobRecorder(settings, "knowledge", llm_version="smollm2") as good:
        good.progress(ok=12)
    with pytest.raises(ValueError):
        with JobRecorder(settings, "knowledge") as bad:
            raise ValueError("no items table")
    listed = _cli(environment, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["run_id"]: r["status"] for r in json.loads(listed.stdout)}
    assert rows == {good.run_id: SUCCEEDED, bad.run_id: FAILED}
    table = _cli(environment, "list")
    assert table.returncode == 0 and good.run_id in table.stdout and "failed" in table.stdout
    shown = _cli(environment, "show", bad.run_id)
    assert shown.returncode == 0, shown.stderr
    assert "ValueError: no items table" in shown.stdout
    missing = _cli(environment, "show", "knowledge-nope")
    assert missing.returncode == 1
    assert "no job run knowledge-nope" in missing.stderr and "Traceback" not in missing.stderr


@pytest.fixture
def recorded_runs(job_settings):
    """One succeeded and one failed knowledge run."""
    settings, _ = job_settings
    with JobRecorder(settings, "knowledge", llm_version="smollm2") as good:
        good.progress(ok=20, skipped=3)
    with pytest.raises(RuntimeError):
        with JobRecorder(settings, "knowledge", llm_version="smollm2") as bad:
            bad.progress(ok=2, failed=1)
            raise RuntimeError("encoder crashed")
    return settings, good.run_id, bad.run_id


def test_ops_service_lists_and_gets_runs_over_grpc(recorded_runs):
    import asyncio

    import grpc

    from serving.server import OPS, build_servicers, start_server
    from streamrec.v1 import ops_pb2, ops_pb2_grpc

    settings, good_id, bad_id = recorded_runs
    settings = settings.model_copy(deep=True)
    settings.serving.port = 0

    async def scenario():
        server, port = await start_server(settings, build_servicers(settings, [OPS]))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = ops_pb2_grpc.OpsServiceStub(channel)
                listed = await stub.ListJobs(ops_pb2.ListJobsRequest(kind="knowledge"))
                by_id = {run.run_id: run for run in listed.runs}
                assert set(by_id) == {good_id, bad_id}
                assert by_id[good_id].status == ops_pb2.JOB_STATUS_SUCCEEDED
                assert by_id[good_id].items_ok == 20 and by_id[good_id].items_skipped == 3
                failed = await stub.GetJob(ops_pb2.GetJobRequest(run_id=bad_id))
                assert failed.status == ops_pb2.JOB_STATUS_FAILED
                assert failed.error == "RuntimeError: encoder crashed"
                assert failed.finished_ms >= failed.started_ms > 0
                one = await stub.ListJobs(ops_pb2.ListJobsRequest(limit=1))
                assert len(one.runs) == 1
                none = await stub.ListJobs(ops_pb2.ListJobsRequest(kind="alignment"))
                assert list(none.runs) == []
                for request, code, words in (
                    (stub.GetJob(ops_pb2.GetJobRequest(run_id="")), "INVALID_ARGUMENT", "run_id"),
                    (stub.GetJob(ops_pb2.GetJobRequest(run_id="x")), "NOT_FOUND", "no job run x"),
                    (stub.ListJobs(ops_pb2.ListJobsRequest(limit=-1)), "INVALID_ARGUMENT", "limit"),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as error:
                        await request
                    assert error.value.code().name == code
                    assert words in error.value.details()
        finally:
            await server.stop(None)

    asyncio.run(scenario())


@pytest.fixture
def status_page(recorded_runs):
    """The status page served from a thread of this process on a free port."""
    import asyncio
    import threading

    from serving.ops import start_status_page

    settings, good_id, bad_id = recorded_runs
    settings = settings.model_copy(deep=True)
    settings.ops.page_port = 0
    loop = asyncio.new_event_loop()
    started = loop.run_until_complete(start_status_page(settings))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{started[1]}", good_id, bad_id
    asyncio.run_coroutine_threadsafe(started[0].cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_status_page_shows_a_failed_run_as_failed_in_headless_chromium(status_page):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    url, good_id, bad_id = status_page
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        assert driver.title == "streamrec jobs"
        failed_row = driver.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{bad_id}"]')
        cells = [td.text for td in failed_row.find_elements(By.TAG_NAME, "td")]
        assert cells[2] == "failed"
        assert cells[-1] == "RuntimeError: encoder crashed"
        colour = failed_row.find_elements(By.TAG_NAME, "td")[2].value_of_css_property("color")
        assert colour in ("rgba(192, 38, 45, 1)", "rgb(192, 38, 45)")
        good_row = driver.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{good_id}"]')
        good_cells = [td.text for td in good_row.find_elements(By.TAG_NAME, "td")]
        assert good_cells[2] == "succeeded" and good_cells[5] == "20"
    finally:
        driver.quit()


def test_status_page_metrics_export_job_figures_from_job_runs(status_page):
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url, _, _ = status_page
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    kind = (("kind", "knowledge"),)
    assert samples[("streamrec_job_failures_total", kind)] == 1
    assert (
        samples[("streamrec_job_runs_total", (("kind", "knowledge"), ("status", "succeeded")))] == 1
    )
    assert samples[("streamrec_job_last_success_timestamp_seconds", kind)] > time.time() - 120
    with urllib.request.urlopen(f"{url}/api/runs", timeout=10) as response:
        assert {run["status"] for run in json.loads(response.read())} == {"succeeded", "failed"}
