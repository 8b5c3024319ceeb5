"""What every command module shares: the console, the error exit, settings with
command-line overrides, and the progress and job-run printers."""

from __future__ import annotations

import time
from typing import NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """A clear message and exit code 1, instead of a traceback."""
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def recorded(settings, kind: str, run, errors: tuple[type[Exception], ...]):
    """`run(job)` inside a `job_runs` row of this kind; the listed errors become messages."""
    from streamrec.jobs import JobRecorder

    try:
        with JobRecorder(settings, kind) as job:
            return run(job)
    except errors as error:
        fail(str(error))


def with_overrides(settings, section: str, **values):
    """A copy of the settings with the options the user gave (not None) set in one section."""
    chosen = {key: value for key, value in values.items() if value is not None}
    if not chosen:
        return settings
    updated = getattr(settings, section).model_copy(update=chosen)
    return settings.model_copy(update={section: updated})


def epoch_printer(progress, task):
    """An `on_epoch` callback that shows the seed, epoch, loss and valid NDCG@10."""

    def on_epoch(seed: int, record: dict) -> None:
        valid = record.get("valid", {})
        progress.update(
            task,
            advance=1,
            description=f"seed {seed} epoch {record['epoch']} loss {record['loss']:.3f} "
            f"valid ndcg@10 {valid.get('ndcg@10', float('nan')):.4f}",
        )

    return on_epoch


RUN_COLOURS = {
    "succeeded": "green",
    "failed": "red",
    "lost": "red",
    "running": "yellow",
    "stopped": "blue",
}


def print_runs(runs) -> None:
    """Job runs as a table on stdout (wide, so that ids and figures are never cut)."""
    from rich.table import Table

    table = Table(
        "run",
        "kind",
        "status",
        "started (UTC)",
        "duration",
        "ok",
        "failed",
        "skipped",
        "items/s",
        "LLM",
    )
    for run in runs:
        colour = RUN_COLOURS.get(run.status, "white")
        table.add_row(
            run.run_id,
            run.kind,
            f"[{colour}]{run.status}[/{colour}]",
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.started_at)),
            f"{run.duration_s:.0f}s",
            str(run.items_ok),
            str(run.items_failed),
            str(run.items_skipped),
            f"{run.items_per_s:.2f}",
            run.llm_version,
        )
    Console(width=200).print(table)
