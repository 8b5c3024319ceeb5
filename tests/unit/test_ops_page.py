"""The status page's HTML without services: an empty system renders, every chart says
when it has nothing, and text from runs (errors, log lines) is escaped, never markup."""

from __future__ import annotations

import time

from serving.ops_charts import line_chart, run_timeline, since_success
from serving.ops_page import PageData, render_page, render_run
from streamrec.coverage import Coverage, ItemFailure
from streamrec.jobs import FAILED, JobRun
from streamrec.settings import Settings

HOSTILE = '<script>alert("x")</script>'


def run(status=FAILED, error=HOSTILE) -> JobRun:
    now = int(time.time())
    return JobRun("knowledge-1", "knowledge", status, now - 60, now, 5, 1, 0, 0.1, "", error, 0)


def empty() -> PageData:
    coverage = Coverage("", "", 0, 0, None, 0, 0.0)
    return PageData(coverage, [], {}, {}, {}, [], [], {}, {})


def test_an_empty_system_renders_a_page_that_says_so():
    page = render_page(empty(), Settings())
    assert '<span id="coverage-figure" class="figure">100.0%</span>' in page
    assert "none yet" in page and "unknown" in page  # versions; pending without Kafka
    assert page.count("no runs yet") == 3 and page.count("nothing recorded yet") == 3
    assert '<meta http-equiv="refresh" content="30">' in page


def test_errors_and_log_lines_are_escaped_on_the_page_and_the_run_page():
    data = empty()
    data.runs = [run()]
    data.timelines = {"knowledge": [run()]}
    data.coverage.failures = [ItemFailure(7, HOSTILE, "knowledge-1", 0)]
    page = render_page(data, Settings())
    detail = render_run(run(), f"12:00:00 WARNING x: {HOSTILE}", 30)
    for html in (page, detail):
        assert "<script>" not in html
        assert "&lt;script&gt;" in html


def test_a_timeline_bar_per_run_in_its_status_colour_linking_to_its_page():
    svg = run_timeline("knowledge", [run("succeeded", ""), run(FAILED, "boom")])
    assert svg.count('class="run-bar"') == 2
    assert 'data-status="failed"' in svg and 'fill="#c0262d"' in svg
    assert svg.count('<a href="/runs/knowledge-1">') == 2


def test_lateness_is_judged_against_the_threshold():
    assert 'data-late="true"' in since_success("knowledge", 30.0, 26.0)
    assert 'data-late="false"' in since_success("knowledge", 2.0, 26.0)
    assert 'data-late="true"' in since_success("knowledge", None, 26.0)  # never succeeded
    assert 'data-late="false"' in since_success("genrec", 400.0, None)  # no threshold


def test_a_line_chart_draws_each_series_and_the_rejections():
    svg = line_chart("c", {"a": [(0, 1.0), (1000, 2.0)], "b": [(0, 0.5)]}, "x", [(500, 1.5, "r")])
    assert svg.count('class="series"') == 2 and svg.count("<circle") == 3
    assert svg.count('class="rejected"') == 1
