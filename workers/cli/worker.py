"""The long-running workers: the online trainer, the knowledge job and the scheduler."""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import console, fail

worker_app = typer.Typer(help="Training and knowledge workers.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(worker_app, name="worker")


def serve_worker_metrics(settings) -> None:
    """The worker's own Prometheus endpoint, when `ops.worker_metrics_port` is set."""
    from prometheus_client import start_http_server

    if settings.ops.worker_metrics_port:
        try:
            start_http_server(
                settings.ops.worker_metrics_port, addr=settings.ops.worker_metrics_host
            )
        except OSError as error:  # the port is taken: the worker still does its work
            console.print(
                f"[yellow]no metrics endpoint on port {settings.ops.worker_metrics_port}: "
                f"{error}[/yellow]"
            )


@worker_app.command("trainer")
def worker_trainer(
    cycles: Annotated[
        int | None, typer.Option(help="Stop after this many publish cycles (default: run on).")
    ] = None,
) -> None:
    """Fine-tune the latest recommender on `training-examples`; publish versions that hold up."""
    from workers.trainer import OnlineTrainer

    settings = get_settings()
    serve_worker_metrics(settings)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    trainer = OnlineTrainer(settings)
    try:
        for decision in trainer.run(max_cycles=cycles):
            if decision is not None:
                outcome = (
                    f"published {decision.version}"
                    if decision.published
                    else f"rebased on {decision.rebased_on}"
                    if decision.rebased_on
                    else "rejected"
                )
                console.print(f"cycle: {outcome}; {json.dumps(decision.metrics)}")
    except KeyboardInterrupt:
        console.print("stopped")
    except RuntimeError as error:
        fail(str(error))
    finally:
        trainer.close()


def run_knowledge(settings, adapter: str | None, once: bool) -> None:
    """The knowledge job: one run, or a run every `knowledge.job_interval_s`. The one way
    it is started (`worker knowledge`; `align` after publishing an adapter; the scheduler
    and `up` run `worker knowledge --once`). A failed one-off run exits with code 1."""
    from workers.knowledge_job import KnowledgeJob
    from workers.knowledge_pipeline import load_knowledge_llm

    job = KnowledgeJob(settings, llm=load_knowledge_llm(settings, adapter=adapter))
    while True:
        outcome = job.run_once()
        console.print(f"knowledge run: {json.dumps(outcome.__dict__)}")
        if once:
            if outcome.failed:
                raise typer.Exit(code=1)
            return
        time.sleep(settings.knowledge.job_interval_s)


@worker_app.command("knowledge")
def worker_knowledge(
    once: Annotated[bool, typer.Option("--once", help="One run, then exit.")] = False,
    adapter: Annotated[
        str | None,
        typer.Option(help='LoRA adapter: a PEFT folder or "latest" in the registry.'),
    ] = None,
) -> None:
    """Give knowledge to requested items and to every item lacking it for the current LLM."""
    settings = get_settings()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not once:  # a one-off run is recorded in job_runs, which the ops page exports
        serve_worker_metrics(settings)
    try:
        run_knowledge(settings, adapter, once)
    except KeyboardInterrupt:
        console.print("stopped")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        fail(str(error))


@worker_app.command("scheduler")
def worker_scheduler(
    alignment: Annotated[
        bool, typer.Option(help="Also run `align` every ops.alignment_interval_h hours.")
    ] = True,
) -> None:
    """Run the daily knowledge job and the periodic alignment on schedule."""
    from datetime import UTC, datetime

    from workers.scheduler import build_scheduler, scheduled_jobs

    settings = get_settings()
    try:
        jobs = scheduled_jobs(settings, alignment=alignment)
    except ValueError as error:
        fail(f"bad schedule in settings: {error}")
    scheduler = build_scheduler(jobs)
    serve_worker_metrics(settings)
    now = datetime.now(UTC)
    for job in jobs:
        console.print(f"{job.name}: next run {job.trigger.get_next_fire_time(None, now)}")
    # SIGTERM (`streamrec down`, Kubernetes) unwinds like Ctrl-C. `down` signals the whole
    # process group, so a job launched meanwhile stops too and records its run as stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        console.print("stopped")
