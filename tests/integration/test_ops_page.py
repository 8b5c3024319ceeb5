"""The ops side against the real ClickHouse and Kafka: knowledge coverage, OpsService's
GetCoverage, the lag and dead-letter sampler, the page's /metrics, and the page itself in
headless Chromium, as a person sees it (the screenshot in docs/images is this test's)."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path

import pytest

from streamrec.coverage import knowledge_coverage
from streamrec.ops_samples import DEAD_LETTERS, LAG, Sampler, history
from tests.integration import ops_seed


def test_coverage_counts_the_catalog_the_covered_the_failed_and_the_waiting(seeded):
    coverage = knowledge_coverage(seeded.settings)
    assert (coverage.llm_version, coverage.prompt_version) == (ops_seed.LLM, ops_seed.PROMPT)
    assert coverage.catalog_items == ops_seed.CATALOG
    # Item 9 has knowledge only from an older LLM: it is missing, not covered.
    assert coverage.covered_items == len(ops_seed.COVERED)
    assert coverage.ratio == pytest.approx(0.6)
    assert coverage.pending_requests == ops_seed.PENDING
    assert coverage.failed_items == 2
    assert {(f.item_id, f.reason) for f in coverage.failures} == {
        (item, ops_seed.ITEM_REASON) for item in ops_seed.FAILED_ITEMS
    }
    assert {f.run_id for f in coverage.failures} == {seeded.failed_run}
    assert 29.9 * 3600 < coverage.oldest_missing_age_s < 30.2 * 3600


def test_ops_service_answers_get_coverage_over_grpc(seeded):
    import grpc

    from serving.server import OPS, build_servicers, start_server
    from streamrec.v1 import ops_pb2, ops_pb2_grpc

    settings = seeded.settings.model_copy(deep=True)
    settings.serving.port = 0

    async def scenario():
        server, port = await start_server(settings, build_servicers(settings, [OPS]))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = ops_pb2_grpc.OpsServiceStub(channel)
                return await stub.GetCoverage(ops_pb2.GetCoverageRequest(), timeout=30)
        finally:
            await server.stop(None)

    reply = asyncio.run(scenario())
    assert (reply.catalog_items, reply.covered_items, reply.failed_items) == (10, 6, 2)
    assert reply.pending_requests == ops_seed.PENDING
    assert reply.ratio == pytest.approx(0.6)
    assert reply.llm_version == ops_seed.LLM
    assert {f.item_id for f in reply.failures} == set(ops_seed.FAILED_ITEMS)


def test_the_sampler_stores_lag_and_new_dead_letters_per_reason(seeded):
    settings = seeded.settings
    ops_seed.dead_letters(
        settings, ["bad_user_id: user_id must be positive"] * 2 + ["bad_value: x"]
    )
    sampler = Sampler(settings)
    try:
        sampler.sample()
        time.sleep(0.01)
        ops_seed.dead_letters(settings, ["missing_title: missing title"])
        sampler.sample()
    finally:
        sampler.stop()
    letters = history(settings, DEAD_LETTERS, 1)
    # The seeded samples are older; the sampler's two are the newest of each series.
    assert letters["bad_value"][-1][1] == 1.0
    assert letters["bad_user_id"][-1][1] == 2.0
    assert [value for _, value in letters["all"]] == [3.0, 1.0]
    assert letters["missing_title"][-1][1] == 1.0
    lag = history(settings, LAG, 1)
    knowledge = f"{settings.knowledge.job_group} on {settings.kafka.knowledge_requests_topic}"
    assert lag[knowledge][-1][1] == ops_seed.PENDING


def test_the_rejection_ndcg_the_page_reads_is_the_one_the_trainer_writes():
    from serving.ops_page import REJECTED_NDCG
    from workers.trainer_gate import rejection

    reason = rejection(0.0421, 0.05, None, 0.001)
    assert float(REJECTED_NDCG.search(reason).group(1)) == 0.0421
    assert rejection(0.0421, 0.05, "NaN scores", 0.001) and not REJECTED_NDCG.search(
        rejection(0.0421, 0.05, "NaN scores", 0.001)
    )


def test_the_page_metrics_export_the_coverage_figures(ops_page):
    from prometheus_client.parser import text_string_to_metric_families

    url, _ = ops_page
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
    assert samples["streamrec_knowledge_catalog_items"] == 10
    assert samples["streamrec_knowledge_covered_items"] == 6
    assert samples["streamrec_knowledge_coverage_ratio"] == pytest.approx(0.6)
    assert samples["streamrec_knowledge_failed_items"] == 2
    assert samples["streamrec_knowledge_pending_requests"] == ops_seed.PENDING
    assert samples["streamrec_knowledge_oldest_missing_age_seconds"] > 29 * 3600


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,2400",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_the_page_in_chromium_shows_coverage_timelines_and_a_failed_runs_error(ops_page, tmp_path):
    from selenium.webdriver.common.by import By

    url, seeded = ops_page
    driver = chromium()
    try:
        driver.get(url)
        assert driver.title == "streamrec jobs"
        assert driver.find_element(By.ID, "coverage-figure").text == "60.0%"
        assert driver.find_element(By.ID, "coverage-covered").text == "6"
        coverage_row = driver.find_elements(By.CSS_SELECTOR, "#coverage td")
        assert [td.text for td in coverage_row][:3] == ["4", "2", "3"]
        reasons = {
            td.text
            for td in driver.find_elements(By.CSS_SELECTOR, "#item-failures td:nth-child(2)")
        }
        assert reasons == {ops_seed.ITEM_REASON}
        # One timeline per kind, each with its runs' bars in the status colours.
        timelines = driver.find_elements(By.CSS_SELECTOR, "svg.timeline")
        assert sorted(t.get_attribute("data-kind") for t in timelines) == list(seeded.kinds)
        statuses = {
            bar.get_attribute("data-status")
            for bar in driver.find_elements(By.CSS_SELECTOR, "rect.run-bar")
        }
        assert statuses == {"succeeded", "failed", "stopped", "lost", "running"}
        knowledge_bars = driver.find_elements(
            By.CSS_SELECTOR, 'svg.timeline[data-kind="knowledge"] rect.run-bar'
        )
        assert len(knowledge_bars) == 7
        failed_bar = knowledge_bars[-1]
        assert failed_bar.get_attribute("data-status") == "failed"
        assert failed_bar.value_of_css_property("fill") in ("rgb(192, 38, 45)", "#c0262d")
        # The failed run's error in the runs table, as text.
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{seeded.failed_run}"]')
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[2] == "failed" and cells[-1] == ops_seed.KNOWLEDGE_ERROR
        # Knowledge succeeded days ago, past its 26 h threshold: shown late.
        late = driver.find_element(By.CSS_SELECTOR, 'svg.since-success[data-kind="knowledge"]')
        assert late.get_attribute("data-late") == "true"
        assert "alert after 26 h" in late.text
        trainer = driver.find_element(By.CSS_SELECTOR, 'svg.since-success[data-kind="trainer"]')
        assert trainer.get_attribute("data-late") == "false"
        # Published versions as a line, the trainer's two rejections as crosses.
        assert len(driver.find_elements(By.CSS_SELECTOR, "#ndcg-chart g.series circle")) == 3
        rejected = driver.find_elements(By.CSS_SELECTOR, "#ndcg-chart g.rejected")
        assert len(rejected) == 2
        assert driver.find_elements(By.CSS_SELECTOR, "#lag-chart g.series")
        assert driver.find_elements(
            By.CSS_SELECTOR, '#dead-letter-chart g[data-label="bad_user_id"]'
        )
        # Readable at 1,280 px: nothing wider than the window.
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 1280
        shot = Path(os.environ.get("OPS_PAGE_SCREENSHOT") or tmp_path / "ops-page.png")
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # A person clicks the red bar: the run's page, with its error and log tail.
        failed_bar.click()
        assert driver.current_url == f"{url}/runs/{seeded.failed_run}"
        assert driver.find_element(By.ID, "run-error").text == ops_seed.KNOWLEDGE_ERROR
        tail = driver.find_element(By.ID, "log-tail").text
        assert "knowledge for items [7, 8] failed" in tail
        assert f"run failed: {ops_seed.KNOWLEDGE_ERROR}" in tail
    finally:
        driver.quit()


def test_a_run_page_that_does_not_exist_is_404(ops_page):
    import urllib.error

    url, _ = ops_page
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{url}/runs/knowledge-nope", timeout=30)
    assert error.value.code == 404


def test_jobs_page_as_a_process_serves_samples_and_logs_nothing_alarming(seeded, tmp_path):
    """`streamrec jobs page` as ops run it: its sampler writes to ClickHouse, the page and
    /metrics answer, and SIGTERM stops it with no warning, error or traceback logged."""
    from streamrec.services import free_port
    from streamrec.services.children import StreamrecProcess, wait_for

    port = free_port()
    environment = {
        **seeded.environment,
        "STREAMREC_OPS__PAGE_PORT": str(port),
        "STREAMREC_OPS__SAMPLE_INTERVAL_S": "1",
    }
    page = StreamrecProcess(["jobs", "page"], environment, tmp_path / "page.log")
    page.start()
    try:

        def sampled() -> bool:
            return "all" in history(seeded.settings, DEAD_LETTERS, 0.05)

        wait_for(sampled, 90, "the page's sampler to write a sample", page)
        for path in ("/", "/metrics", f"/runs/{seeded.failed_run}"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
                assert reply.status == 200
    finally:
        page.stop()
    log = page.log()
    assert "job status page on" in log
    for word in ("WARNING", "ERROR", "Traceback"):
        assert word not in log, log
