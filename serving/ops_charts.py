"""The status page's charts, as inline SVG written on the server: no script, no library,
nothing fetched by the browser, so the page works behind any firewall and in a test.

Each function returns one `<svg>` element; every mark carries a `<title>` (the browser's
tooltip) and data attributes a test can read.
"""

from __future__ import annotations

import html
import time

STATUS_COLOURS = {
    "succeeded": "#17803d",
    "failed": "#c0262d",
    "lost": "#7b2cbf",
    "stopped": "#8a8a8a",
    "running": "#d08a00",
}
SERIES_COLOURS = ("#1f6fb4", "#d95f02", "#7570b3", "#1b9e77", "#e7298a", "#66a61e", "#a6761d")


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _clock(ms: float) -> str:
    return time.strftime("%m-%d %H:%M", time.gmtime(ms / 1000))


def coverage_bar(covered: int, failed: int, total: int, threshold: float, width=1000) -> str:
    """Covered (green), failed (red) and the rest missing (grey), with the alert threshold."""
    height, top = 34, 4
    total = max(total, 1)
    covered_w = width * covered / total
    failed_w = width * failed / total
    mark = width * threshold
    return (
        f'<svg id="coverage-bar" width="{width}" height="{height + 18}" role="img" '
        f'aria-label="knowledge coverage">'
        f'<rect x="0" y="{top}" width="{width}" height="{height}" fill="#ddd">'
        f"<title>{total - covered - failed} items missing</title></rect>"
        f'<rect class="covered" x="0" y="{top}" width="{covered_w:.1f}" height="{height}" '
        f'fill="#17803d"><title>{covered} items with knowledge</title></rect>'
        f'<rect class="failed" x="{covered_w:.1f}" y="{top}" width="{failed_w:.1f}" '
        f'height="{height}" fill="#c0262d"><title>{failed} items failed</title></rect>'
        f'<line x1="{mark:.1f}" x2="{mark:.1f}" y1="0" y2="{height + 8}" stroke="#000" '
        f'stroke-dasharray="4 2"/><text x="{min(mark, width - 140):.1f}" y="{height + 18}" '
        f'font-size="11">alert below {threshold:.0%}</text></svg>'
    )


def run_timeline(kind: str, runs: list, width=1000, height=120) -> str:
    """One bar per run, oldest left: its height the duration, its colour the status, a
    link to the run's page; a line of items/s across them."""
    pad_l, pad_b, pad_t = 56, 18, 8
    plot_w, plot_h = width - pad_l - 56, height - pad_b - pad_t
    slots = max(len(runs), 1)
    step = plot_w / slots
    longest = max((run.duration_s for run in runs), default=0) or 1
    fastest = max((run.items_per_s for run in runs), default=0) or 1
    marks, points = [], []
    for i, run in enumerate(runs):
        h = max(4.0, plot_h * run.duration_s / longest)
        x = pad_l + i * step + step * 0.15
        colour = STATUS_COLOURS.get(run.status, "#444")
        tip = (
            f"{run.run_id}: {run.status}, {run.duration_s:.0f} s, {run.items_per_s:.2f} items/s"
            + (f" - {run.error}" if run.error else "")
        )
        # The whole slot is the link, so a short run's thin bar is easy to hit.
        marks.append(
            f'<a href="/runs/{_esc(run.run_id)}"><rect x="{x:.1f}" y="{pad_t}" '
            f'width="{step * 0.7:.1f}" height="{plot_h}" fill="transparent"/>'
            f'<rect class="run-bar" data-run-id='
            f'"{_esc(run.run_id)}" data-status="{_esc(run.status)}" x="{x:.1f}" '
            f'y="{pad_t + plot_h - h:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
            f'fill="{colour}"><title>{_esc(tip)}</title></rect></a>'
        )
        y = pad_t + plot_h - plot_h * run.items_per_s / fastest
        points.append(f"{x + step * 0.35:.1f},{y:.1f}")
    line = (
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#1f6fb4" '
        'stroke-width="2" pointer-events="none"/>'
        if len(points) > 1
        else ""
    )
    axis = (
        f'<text x="{pad_l - 4}" y="{pad_t + 10}" font-size="11" text-anchor="end">'
        f"{longest:.0f} s</text>"
        f'<text x="{width - 52}" y="{pad_t + 10}" font-size="11" fill="#1f6fb4">'
        f"{fastest:.1f}/s</text>"
        f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{pad_t + plot_h}" '
        f'y2="{pad_t + plot_h}" stroke="#999"/>'
        f'<text x="{pad_l}" y="{height - 4}" font-size="11">oldest of {len(runs)} runs</text>'
        f'<text x="{pad_l + plot_w}" y="{height - 4}" font-size="11" text-anchor="end">'
        "newest</text>"
    )
    return (
        f'<svg class="timeline" data-kind="{_esc(kind)}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_esc(kind)} runs">{axis}{"".join(marks)}{line}</svg>'
    )


def since_success(kind: str, hours: float | None, threshold_h: float | None, width=1000) -> str:
    """Hours since the kind's last success as a bar, against its alert threshold."""
    height = 22
    scale = max(hours or 0, threshold_h or 0, 1) * 1.1
    late = hours is None or (threshold_h is not None and hours > threshold_h)
    bar_w = (width - 300) * (hours if hours is not None else scale) / scale
    text = "never succeeded" if hours is None else f"{hours:.1f} h ago"
    limit = "" if threshold_h is None else f" (alert after {threshold_h:g} h)"
    mark = ""
    if threshold_h is not None:
        x = 120 + (width - 300) * threshold_h / scale
        mark = (
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" stroke="#000" stroke-width="2"/>'
        )
    return (
        f'<svg class="since-success" data-kind="{_esc(kind)}" data-late="{str(late).lower()}" '
        f'width="{width}" height="{height}"><text x="0" y="15" font-size="13">{_esc(kind)}</text>'
        f'<rect x="120" y="3" width="{bar_w:.1f}" height="{height - 6}" '
        f'fill="{"#c0262d" if late else "#17803d"}"/>{mark}'
        f'<text x="{width - 175}" y="15" font-size="12">{_esc(text + limit)}</text></svg>'
    )


def line_chart(
    chart_id: str,
    series: dict[str, list[tuple[float, float]]],
    unit: str,
    rejected: list[tuple[float, float, str]] = (),
    width=1000,
    height=200,
) -> str:
    """Lines of (ms, value) points per label, a legend, and optional red crosses (rejected
    candidates on the NDCG chart). An empty chart says so."""
    pad_l, pad_r, pad_t, pad_b = 56, 200, 10, 22
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    xs = [x for pts in series.values() for x, _ in pts] + [x for x, _, _ in rejected]
    ys = [y for pts in series.values() for _, y in pts] + [y for _, y, _ in rejected]
    if not xs:
        return (
            f'<svg id="{chart_id}" width="{width}" height="40"><text x="0" y="20" '
            f'font-size="13" fill="#666">nothing recorded yet</text></svg>'
        )
    x0, x1 = min(xs), max(xs)
    y1 = max(ys) * 1.1 or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        fx = (x - x0) / (x1 - x0) if x1 > x0 else 0.5
        return pad_l + fx * plot_w, pad_t + plot_h - plot_h * y / y1

    parts = [
        f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{pad_t + plot_h}" y2="{pad_t + plot_h}" '
        f'stroke="#999"/><line x1="{pad_l}" x2="{pad_l}" y1="{pad_t}" y2="{pad_t + plot_h}" '
        f'stroke="#999"/><text x="{pad_l - 4}" y="{pad_t + 10}" font-size="11" '
        f'text-anchor="end">{y1:.3g}</text><text x="{pad_l - 4}" y="{pad_t + plot_h}" '
        f'font-size="11" text-anchor="end">0</text><text x="{pad_l}" y="{height - 4}" '
        f'font-size="11">{_clock(x0)}</text><text x="{pad_l + plot_w}" y="{height - 4}" '
        f'font-size="11" text-anchor="end">{_clock(x1)} UTC</text>'
    ]
    for i, (label, pts) in enumerate(sorted(series.items())):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        coords = [at(x, y) for x, y in pts]
        path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
        parts.append(
            f'<g class="series" data-label="{_esc(label)}"><polyline points="{path}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
            + "".join(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}"><title>'
                f"{_esc(label)} {_clock(x)}: {y:.4g} {unit}</title></circle>"
                for (cx, cy), (x, y) in zip(coords, pts, strict=True)
            )
            + "</g>"
        )
        parts.append(
            f'<text x="{width - pad_r + 10}" y="{pad_t + 12 + 16 * i}" font-size="12" '
            f'fill="{colour}">{_esc(label)}</text>'
        )
    for x, y, tip in rejected:
        cx, cy = at(x, y)
        parts.append(
            f'<g class="rejected"><path d="M{cx - 4:.1f},{cy - 4:.1f}L{cx + 4:.1f},{cy + 4:.1f}'
            f'M{cx - 4:.1f},{cy + 4:.1f}L{cx + 4:.1f},{cy - 4:.1f}" stroke="#c0262d" '
            f'stroke-width="2"><title>{_esc(tip)}</title></path></g>'
        )
    if rejected:
        n = len(series)
        parts.append(
            f'<text x="{width - pad_r + 10}" y="{pad_t + 12 + 16 * n}" font-size="12" '
            f'fill="#c0262d">x rejected</text>'
        )
    return f'<svg id="{chart_id}" width="{width}" height="{height}">{"".join(parts)}</svg>'
