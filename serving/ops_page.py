"""The status page's HTML: what ops look at first (knowledge coverage, each job kind's
recent runs, how late each kind is, the model versions and their held-out NDCG@10, the
stream's lag and dead letters), then the recent runs as a table; and one run's own page
with its error and the last lines it logged.

Everything is gathered in one call (`gather`, run off the event loop) and rendered on
the server; the charts are inline SVG (serving/ops_charts.py).
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field

from serving.ops_charts import (
    STATUS_COLOURS,
    coverage_bar,
    line_chart,
    run_timeline,
    since_success,
)
from streamrec.coverage import Coverage, knowledge_coverage
from streamrec.jobs import FAILED, JobRun, kind_summaries, list_runs, recent_runs_by_kind
from streamrec.ops_samples import DEAD_LETTERS, LAG, history
from streamrec.registry import FailedVersion, ModelRegistry
from streamrec.settings import Settings

NDCG_KEY = "heldout_ndcg@10"
# The online trainer's rejection (workers/trainer_gate.rejection) names the candidate's
# NDCG@10 first; tests/integration/test_ops_page.py keeps the two in step.
REJECTED_NDCG = re.compile(r"held-out NDCG@10 ([0-9.]+) below")


@dataclass
class PageData:
    coverage: Coverage
    runs: list[JobRun]  # the newest, any kind
    timelines: dict[str, list[JobRun]]
    last_success: dict[str, float | None]  # Unix seconds by kind
    published: dict[str, list[tuple[float, float]]]  # family -> (created ms, NDCG@10)
    rejected: list[tuple[float, float, str]]  # (ms, NDCG@10, why)
    latest: list[tuple[str, str, str]]  # (family, version, created) of the served families
    lag: dict[str, list[tuple[int, float]]]
    dead_letters: dict[str, list[tuple[int, float]]]
    refused: list[FailedVersion] = field(default_factory=list)


def served_families(settings: Settings) -> list[str]:
    return [settings.recommender.family, settings.genrec.family, settings.recsysllm.family]


def refused_versions(settings: Settings) -> list[FailedVersion]:
    """Versions of the served families that servers refused (`ModelRegistry.failed`)."""
    registry = ModelRegistry.from_settings(settings)
    return [entry for family in served_families(settings) for entry in registry.failed(family)]


def model_history(settings: Settings):
    """Published versions with a held-out NDCG@10, the trainer's rejected candidates, and
    the newest version of each served family."""
    registry = ModelRegistry.from_settings(settings)
    published: dict[str, list[tuple[float, float]]] = {}
    latest = []
    for family in served_families(settings):
        versions = registry.versions(family)
        for version in versions:
            ndcg = (version.metadata.get("metrics") or {}).get(NDCG_KEY)
            if isinstance(ndcg, int | float):
                when = float(version.metadata.get("created_at_ms") or 0)
                published.setdefault(family, []).append((when, float(ndcg)))
        if versions:
            newest = versions[-1]
            latest.append((family, newest.version, str(newest.metadata.get("created_at", ""))))
    rejected = []
    for run in list_runs(settings, "trainer", FAILED, 1000):
        found = REJECTED_NDCG.search(run.error)
        if found:
            rejected.append((run.finished_at * 1000.0, float(found.group(1)), run.error))
    return published, rejected, latest


def gather(settings: Settings, kind: str | None = None) -> PageData:
    ops = settings.ops
    summaries = {s["kind"]: s for s in kind_summaries(settings)}
    published, rejected, latest = model_history(settings)
    return PageData(
        coverage=knowledge_coverage(settings),
        runs=list_runs(settings, kind),
        timelines=recent_runs_by_kind(settings, ops.timeline_runs),
        last_success={k: (s["last_success"] or None) for k, s in summaries.items()},
        published=published,
        rejected=rejected,
        latest=latest,
        lag=history(settings, LAG, ops.history_h),
        dead_letters=history(settings, DEAD_LETTERS, ops.history_h),
        refused=refused_versions(settings),
    )


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) if seconds else ""


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cells(values) -> str:
    return "".join(f"<td>{html.escape(str(value))}</td>" for value in values)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1240px; color: #222; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
svg { display: block; max-width: 100%; height: auto; margin: 4px 0; }
.figure { font-size: 1.5em; font-weight: bold; }
.late { color: #c0262d; }
pre { background: #f4f4f4; padding: 8px; white-space: pre-wrap; max-width: 1200px; }
#runs td:last-child { max-width: 360px; overflow-wrap: anywhere; }
""" + "".join(
    f"tr.status-{status} td:nth-child(3) {{ color: {colour}; }}\n"
    for status, colour in STATUS_COLOURS.items()
)


def _document(title: str, refresh_s: int, body: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width">
<meta http-equiv="refresh" content="{refresh_s}">
<style>{STYLE}</style></head>
<body>{body}</body></html>
"""


def render_coverage(coverage: Coverage, threshold: float) -> str:
    pending = "unknown" if coverage.pending_requests is None else coverage.pending_requests
    failures = "".join(
        f'<tr class="item-failure" data-item-id="{f.item_id}">'
        + _cells((f.item_id, f.reason, _when(f.failed_ms / 1000)))
        + f'<td><a href="/runs/{html.escape(f.run_id)}">{html.escape(f.run_id)}</a></td></tr>'
        for f in coverage.failures
    )
    failed_table = (
        '<table id="item-failures"><tr><th>item</th><th>reason</th><th>failed (UTC)</th>'
        f"<th>run</th></tr>{failures}</table>"
        if failures
        else ""
    )
    low = " late" if coverage.ratio < threshold else ""
    return (
        '<h2>Knowledge coverage</h2><p><span id="coverage-figure" class="figure'
        f'{low}">{coverage.ratio:.1%}</span> of the catalog: '
        f'<span id="coverage-covered">{coverage.covered_items}</span> of '
        f'<span id="coverage-catalog">{coverage.catalog_items}</span> items have knowledge '
        f"for LLM <code>{html.escape(coverage.llm_version or 'none yet')}</code>, prompt "
        f"<code>{html.escape(coverage.prompt_version or 'none yet')}</code>.</p>"
        + coverage_bar(
            coverage.covered_items, coverage.failed_items, coverage.catalog_items, threshold
        )
        + '<table id="coverage"><tr><th>missing</th><th>failed</th><th>pending requests</th>'
        "<th>oldest missing for</th></tr><tr>"
        + _cells(
            (
                coverage.missing_items,
                coverage.failed_items,
                pending,
                _age(coverage.oldest_missing_age_s) if coverage.missing_items else "-",
            )
        )
        + "</tr></table>"
        + failed_table
    )


def render_jobs(data: PageData, thresholds: dict[str, float]) -> str:
    now = time.time()
    kinds = sorted(set(data.timelines) | set(thresholds))
    lateness = "".join(
        since_success(
            kind,
            (now - data.last_success[kind]) / 3600 if data.last_success.get(kind) else None,
            thresholds.get(kind),
        )
        for kind in kinds
        if kind in data.timelines or kind in data.last_success
    )
    timelines = "".join(
        f'<h3>{html.escape(kind)}</h3><div class="kind" data-kind="{html.escape(kind)}">'
        + run_timeline(kind, runs)
        + "</div>"
        for kind, runs in sorted(data.timelines.items())
    )
    legend = " ".join(
        f'<span style="color:{colour}">&#9632; {status}</span>'
        for status, colour in STATUS_COLOURS.items()
    )
    return (
        "<h2>Since the last success</h2><p>Each kind's hours since its last successful run; "
        "the black line is its alert threshold.</p>"
        + (lateness or "<p>no runs yet</p>")
        + "<h2>Recent runs per kind</h2><p>Bars: each run's duration, oldest left (click one "
        f"for its page); blue line: items/s. {legend}</p>" + (timelines or "<p>no runs yet</p>")
    )


def render_models(data: PageData) -> str:
    latest = "".join(f"<tr>{_cells(row)}</tr>" for row in data.latest) or (
        '<tr><td colspan="3">no model published yet</td></tr>'
    )
    return (
        "<h2>Model versions</h2>"
        '<table id="latest-models"><tr><th>family</th><th>newest version</th>'
        f"<th>published (UTC)</th></tr>{latest}</table>"
        "<p>Held-out NDCG@10 of each published version (dots) and of the online trainer's "
        "rejected candidates (red crosses), over time.</p>"
        + line_chart("ndcg-chart", data.published, "NDCG@10", data.rejected)
    )


def render_stream(data: PageData, hours: float) -> str:
    return (
        f"<h2>Stream</h2><p>Consumer lag (messages behind) per group, last {hours:g} h:</p>"
        + line_chart("lag-chart", data.lag, "messages")
        + "<p>Dead letters per reason, per sample:</p>"
        + line_chart("dead-letter-chart", data.dead_letters, "letters")
    )


def render_runs_table(runs: list[JobRun]) -> str:
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
        link = f'<a href="/runs/{html.escape(run.run_id)}">{html.escape(run.run_id)}</a>'
        rows.append(
            f'<tr class="run status-{run.status}" data-run-id="{html.escape(run.run_id)}" '
            f'data-status="{run.status}"><td>{link}</td>{_cells(cells[1:])}</tr>'
        )
    body = "\n".join(rows) or '<tr><td colspan="11">no runs yet</td></tr>'
    return (
        f"<h2>Recent runs</h2><p>The {len(runs)} newest runs, newest first.</p>"
        '<table id="runs"><tr><th>run</th><th>kind</th><th>status</th><th>started (UTC)</th>'
        "<th>duration</th><th>ok</th><th>failed</th><th>skipped</th><th>items/s</th>"
        f"<th>LLM</th><th>error</th></tr>\n{body}\n</table>"
    )


def render_refused(refused: list[FailedVersion]) -> str:
    rows = "\n".join(
        f'<tr class="refused" data-version="{html.escape(f"{e.family}/{e.version}")}">'
        + _cells((e.family, e.version, e.failed_at, e.reason))
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


def render_page(data: PageData, settings: Settings) -> str:
    ops = settings.ops
    body = (
        f"<h1>streamrec ops</h1><p>Refreshes every {ops.page_refresh_s} s. Where to look "
        "first when a knowledge job fails: its red bar below, then its page (error and log "
        "tail).</p>"
        + render_coverage(data.coverage, ops.coverage_alert_ratio)
        + render_jobs(data, ops.success_alert_h)
        + render_models(data)
        + render_stream(data, ops.history_h)
        + render_runs_table(data.runs)
        + render_refused(data.refused)
    )
    return _document("streamrec jobs", ops.page_refresh_s, body)


def render_run(run: JobRun, log_tail: str, refresh_s: int) -> str:
    """One run's page: its figures, its error, the last lines it logged."""
    fields = (
        ("kind", run.kind),
        ("status", run.status),
        ("started (UTC)", _when(run.started_at)),
        ("finished (UTC)", _when(run.finished_at) if run.status != "running" else ""),
        ("duration", f"{run.duration_s:.0f} s"),
        (
            "items ok / failed / skipped",
            f"{run.items_ok} / {run.items_failed} / {run.items_skipped}",
        ),
        ("items/s", f"{run.items_per_s:.2f}"),
        ("LLM", run.llm_version),
    )
    rows = "".join(
        f"<tr><th>{name}</th><td>{html.escape(value)}</td></tr>" for name, value in fields
    )
    error = f'<h2>Error</h2><pre id="run-error">{html.escape(run.error)}</pre>' if run.error else ""
    body = (
        f'<p><a href="/">&larr; all runs</a></p><h1>Run {html.escape(run.run_id)}</h1>'
        f'<table id="run" class="status-{run.status}" data-status="{run.status}">{rows}</table>'
        + error
        + '<h2>Log tail</h2><pre id="log-tail">'
        + (html.escape(log_tail) or "nothing logged")
        + "</pre>"
    )
    return _document(f"run {run.run_id}", refresh_s, body)
