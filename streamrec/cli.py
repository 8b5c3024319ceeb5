"""The `streamrec` command line: the composition root, and `streamrec up`.

This is the one file of the kernel that imports the planes. Each plane keeps its
own commands beside its code (`streams/cli.py`, `serving/cli.py`, `workers/cli/`),
the kernel's are in `streamrec/commands/`, and this file puts them together with
`up`, which runs the whole system on one machine: the services, then each plane
as a background process (`streamrec.services.planes`), showing what each did.
Plane code runs only inside the command that needs it, so `streamrec --help` stays
fast and each plane keeps its own dependencies.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Annotated

import typer

from serving import cli as serving_commands
from streamrec import logs
from streamrec.commands import jobs, services, system, users
from streamrec.settings import get_settings
from streamrec.terminal import console, fail, print_runs
from streams import cli as stream_commands
from workers import cli as worker_commands

app = typer.Typer(help="streamrec: a streaming, online-learning recommender.", no_args_is_help=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logs.configure(verbose)


def up(
    dataset: Annotated[str, typer.Option(help="Dataset to stream.")] = "ml-100k",
    limit: Annotated[int | None, typer.Option(help="Stream only the first N interactions.")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second.")] = None,
    assets: Annotated[bool, typer.Option(help="Fetch the LLM and encoder when missing.")] = True,
    detach: Annotated[
        bool,
        typer.Option(
            help="Return once everything runs, leaving the system running (`streamrec down`)."
        ),
    ] = False,
    knowledge: Annotated[
        bool, typer.Option(help="Run the knowledge job once for the catalog.")
    ] = True,
    trainer: Annotated[bool, typer.Option(help="Run the online trainer.")] = True,
) -> None:
    """The main job: services, schema, data and assets; the stream worker; the dataset
    streamed as live events until every one is stored in ClickHouse; a first model served;
    the online trainer and the scheduler, and one knowledge run for the catalog, with a
    summary of both.

    Each plane runs in the background with a PID file and a log under the data dir. Then
    runs until Ctrl-C, which stops everything it started; with --detach it returns and
    leaves everything running (`streamrec status`, `streamrec down`).
    """
    from streamrec.datasets import fetch_dataset
    from streamrec.db import migrate
    from streamrec.services import LocalServices
    from streamrec.services.planes import SCHEDULER, SERVER, STREAM_WORKER, TRAINER, PlaneProcesses
    from streamrec.services.process import tail
    from streams.replay import replay_dataset, stored_interactions
    from streams.topics import ensure_topics

    settings = get_settings()
    planes = PlaneProcesses(settings)
    if running := planes.running():
        listed = ", ".join(f"{name} (pid {pid})" for name, pid in running.items())
        console.print(
            f"streamrec is already up from {settings.data_dir}: {listed}. "
            "`streamrec status` shows it; `streamrec down` stops it."
        )
        return
    services = LocalServices(settings)
    already_running = any(info["running"] for info in services.status().values())
    left_running = False
    # SIGTERM (and SIGHUP, its terminal closed) unwind like Ctrl-C, through the `finally`.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    try:
        started = time.perf_counter()
        services.start()
        console.print(f"services ready in {time.perf_counter() - started:.1f}s")
        console.print(f"schema applied: {', '.join(migrate(settings))}")
        console.print(f"dataset at {fetch_dataset(dataset, settings)}")
        if assets:
            from streamrec.assets import fetch_assets

            console.print(f"assets: {fetch_assets(settings)}")
        ensure_topics(settings)
        started_planes = [STREAM_WORKER]
        planes.start(STREAM_WORKER)
        expected = _replayed_count(settings, dataset, limit)
        if stored_interactions(settings, dataset) >= expected:
            # Replaying again would only fill the DLQ: the stored events keep their ids,
            # and the new copies, stamped now, are refused as duplicate_event_id.
            console.print(f"{dataset} was streamed before: not replayed")
        else:
            console.print(replay_dataset(settings, dataset, rate=rate, limit=limit).describe())
        stored = _wait_for_rows(settings, dataset, expected, planes, STREAM_WORKER)
        console.print(f"ClickHouse holds {stored:,} interactions of {dataset}")
        _ensure_served_model(settings, dataset)
        started_planes.append(SERVER)
        planes.start(SERVER)
        _show_recommendations(settings, dataset, planes, SERVER)
        jobs_since = int(time.time())
        for plane in [TRAINER, SCHEDULER] if trainer else [SCHEDULER]:
            started_planes.append(plane)
            planes.start(plane)
        if knowledge:
            _run_knowledge_once()
        _show_jobs(settings, planes if trainer else None, jobs_since)
        _show_planes(planes, started_planes)
        if detach:
            left_running = True
            console.print(
                "left running: `streamrec status` shows the system, `streamrec down` stops it"
            )
            return
        console.print("running; Ctrl-C stops everything")
        while not (stopped := [p for p in started_planes if not planes.alive(p)]):
            time.sleep(1)
        log = planes.log_file(stopped[0])
        fail(f"the {stopped[0].name} exited; stopping everything. End of {log}:\n{tail(log)}")
    except KeyboardInterrupt:
        console.print("interrupted")
    finally:
        if not left_running:
            planes.stop_all()
            if not already_running:
                console.print("stopping the services started by `up`")
                services.stop()


def _show_planes(planes, started) -> None:
    for plane in started:
        console.print(f"{plane.name}: pid {planes.pid(plane)}, log {planes.log_file(plane)}")


def _replayed_count(settings, dataset: str, limit: int | None) -> int:
    """How many interactions a replay of `dataset` (up to `limit`) sends."""
    from streamrec.datasets import load_dataset

    count = len(load_dataset(dataset, settings).interaction_records())
    return count if limit is None else min(count, limit)


def _wait_for_rows(settings, dataset: str, expected: int, planes, worker) -> int:
    """Block until the stream worker has stored `expected` rows of this dataset's replay."""
    from rich.progress import Progress

    from streams.replay import stored_interactions

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rows stored in ClickHouse", total=expected)
        while (stored := stored_interactions(settings, dataset)) < expected:
            progress.update(task, completed=stored)
            if not planes.alive(worker):
                raise RuntimeError(f"the stream worker exited; see {planes.log_file(worker)}")
            time.sleep(0.5)
    return stored


def _ensure_served_model(settings, dataset: str) -> None:
    """A model to serve: a quick first SASRec when the registry has no loadable version of
    the family (none yet, or the newest one is damaged or in an older format)."""
    from models.sequential import SequentialRecommender
    from streamrec.registry import ModelRegistry

    family = settings.recommender.family
    latest = ModelRegistry.from_settings(settings).latest(family)
    if latest is not None:
        try:
            SequentialRecommender.from_pretrained(latest.path)
        except (ValueError, OSError) as error:  # ArtifactError included
            reason = f"{family}/{latest.version} does not load ({error})"
        else:
            console.print(f"serving {family}/{latest.version} from the registry")
            return
    else:
        reason = f"no {family} model in the registry"
    from streamrec.datasets import load_dataset
    from workers.recommender_training import train_first_model

    epochs = settings.serving.first_model_epochs
    console.print(
        f"{reason}: training a small SASRec on {dataset} for {epochs} epochs "
        "(a quick first model; the trainer improves on it)"
    )
    version = train_first_model(
        settings,
        load_dataset(dataset, settings),
        epochs,
        max_users=settings.serving.first_model_max_users,
    )
    console.print(
        f"published {version.family}/{version.version} in {version.metadata['train_seconds']}s"
    )


def _show_recommendations(settings, dataset: str, planes, server, users: int = 3) -> None:
    """Ask the server for a few users' recommendations, and print them."""
    import grpc
    from rich.table import Table

    from streamrec.client import RecommenderClient
    from streamrec.datasets import load_dataset

    data = load_dataset(dataset, settings)
    titles = {item.external_id: item.title for item in data.items.values()}
    user_ids = sorted(user.external_id for user in data.users.values())[:users]
    deadline = time.monotonic() + settings.serving.startup_timeout_s
    with RecommenderClient.from_settings(settings, host="127.0.0.1") as client:
        while True:
            try:
                answers = {user: client.recommend(user_id=user, k=5) for user in user_ids}
                break
            except grpc.RpcError as error:
                # Still starting, or slow on its first calls (model load, index build).
                retry = error.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                if not retry or not planes.alive(server) or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the gRPC server did not answer: {error.details()}"
                    ) from None
                time.sleep(0.5)
    port = settings.serving.port
    for user, answer in answers.items():
        source = "cold start: popular items" if answer.cold_start else answer.model_version
        table = Table(title=f"user {user}: top 5 ({source})")
        table.add_column("item")
        table.add_column("title")
        table.add_column("score", justify="right")
        for item in answer.items:
            table.add_row(str(item.item_id), titles.get(item.item_id, ""), f"{item.score:.3f}")
        console.print(table)
    console.print(
        f"gRPC on {settings.serving.host}:{port}; try: grpcurl -plaintext "
        f'-d \'{{"user_id": {user_ids[0]}, "k": 5}}\' 127.0.0.1:{port} '
        "streamrec.v1.RecommenderService/Recommend"
    )


def _run_knowledge_once() -> None:
    """One knowledge run for the catalog (`worker knowledge --once`), waited for; a child
    of `up` meanwhile, so that Ctrl-C (which reaches its process group) stops it too."""
    from streamrec.services.children import streamrec_command

    console.print("knowledge: one run for the catalog (LLM generate + encode; cached texts reused)")
    started = time.perf_counter()
    run = subprocess.Popen(streamrec_command("worker", "knowledge", "--once"))
    try:
        code = run.wait()
    except KeyboardInterrupt:  # a SIGTERM to `up` alone: pass it on
        run.terminate()
        run.wait(timeout=30)
        raise
    if code != 0:
        console.print(f"[red]the knowledge run exited with code {code}[/red] (see jobs below)")
    else:
        console.print(f"knowledge: done in {time.perf_counter() - started:,.0f} s")


def _show_jobs(settings, planes, since: float) -> None:
    """The jobs' summary: the knowledge run and the online trainer's state (`planes` None:
    no trainer was started)."""
    from streamrec.jobs import list_runs
    from streamrec.services.planes import TRAINER

    def trainer_alive() -> bool:
        return planes is not None and planes.alive(TRAINER)

    deadline = time.monotonic() + settings.ops.up_trainer_wait_s
    trainer_runs = []
    while trainer_alive() and time.monotonic() < deadline:
        trainer_runs = [
            r for r in list_runs(settings, kind="trainer", limit=1) if r.started_at >= since
        ]
        if trainer_runs:
            break
        time.sleep(1)
    runs = [*list_runs(settings, kind="knowledge", limit=1), *trainer_runs]
    if runs:
        print_runs(runs)
    if planes is None:
        return
    if not trainer_alive():
        console.print(f"[red]the online trainer exited[/red] (see {planes.log_file(TRAINER)})")
    elif trainer_runs:
        console.print(
            "online trainer: consuming training-examples (`streamrec jobs list --kind trainer`)"
        )
    else:
        console.print("online trainer: started, still loading its model")


app.command()(up)
for area in (system, users, services, stream_commands, worker_commands, jobs):
    area.register(app)
serving_commands.register(app, jobs.jobs_app)

if __name__ == "__main__":  # `python -m streamrec.cli`: how planes and jobs are started
    app()
