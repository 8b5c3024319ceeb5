"""The `streamrec` command line: the composition root.

This is the one kernel file that imports the planes (streams, workers,
serving), and only lazily inside the subcommand that needs them, so that
`streamrec --help` stays fast and each plane keeps its own dependencies.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

from streamrec.settings import get_settings

app = typer.Typer(help="streamrec: a streaming, online-learning recommender.", no_args_is_help=True)
services_app = typer.Typer(help="The local Kafka and ClickHouse.", no_args_is_help=True)
db_app = typer.Typer(help="The ClickHouse schema.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
assets_app = typer.Typer(help="Model assets (LLM, text encoder).", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")
app.add_typer(assets_app, name="assets")
stream_app = typer.Typer(help="The stream plane.", no_args_is_help=True)
app.add_typer(stream_app, name="stream")
knowledge_app = typer.Typer(help="LLM item knowledge.", no_args_is_help=True)
app.add_typer(knowledge_app, name="knowledge")
worker_app = typer.Typer(help="Training and knowledge workers.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
jobs_app = typer.Typer(help="Job runs, for ops.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

console = Console(stderr=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python narrates every connection at INFO.
    logging.getLogger("kafka").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@services_app.command("start")
def services_start(
    kafka: bool = typer.Option(True, help="Start Kafka."),
    clickhouse: bool = typer.Option(True, help="Start ClickHouse."),
) -> None:
    """Start the local Kafka and ClickHouse (idempotent) and print their addresses."""
    from streamrec.services import LocalServices

    started = time.perf_counter()
    try:
        endpoints = LocalServices(get_settings()).start(kafka=kafka, clickhouse=clickhouse)
    except RuntimeError as error:
        _fail(str(error))
    console.print(f"services ready in {time.perf_counter() - started:.1f}s")
    print(json.dumps(endpoints.as_dict() if hasattr(endpoints, "as_dict") else endpoints, indent=2))


@services_app.command("stop")
def services_stop() -> None:
    """Stop the local services started from this data directory."""
    from streamrec.services import LocalServices

    LocalServices(get_settings()).stop()
    console.print("services stopped")


@services_app.command("status")
def services_status() -> None:
    """Print what is running, with pids and addresses."""
    from streamrec.services import LocalServices

    print(json.dumps(LocalServices(get_settings()).status(), indent=2, default=str))


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the ClickHouse schema (safe to run again)."""
    from streamrec.db import migrate

    tables = migrate(get_settings())
    console.print(f"schema applied; tables: {', '.join(tables)}")


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k.")]) -> None:
    """Fetch and verify a dataset into the cache."""
    from streamrec.datasets import fetch_dataset

    try:
        path = fetch_dataset(name, get_settings())
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        _fail(str(error))
    console.print(f"{name} ready at {path}")


@assets_app.command("fetch")
def assets_fetch() -> None:
    """Fetch the default LLM and text encoder into the cache."""
    from streamrec.assets import fetch_assets

    try:
        paths = fetch_assets(get_settings())
    except RuntimeError as error:
        _fail(str(error))
    console.print(f"assets ready: {paths}")


@stream_app.command("worker")
def stream_worker(
    loglevel: Annotated[str, typer.Option(help="faust log level.")] = "warning",
) -> None:
    """Run the faust stream worker until stopped (topics are created first)."""
    import faust

    from streams.topics import ensure_topics

    ensure_topics(get_settings())
    from streams.app import app as stream_app_instance

    # Below the chosen level nothing is printed, yet the Kafka clients build a
    # log record per message unless records that low are switched off.
    logging.disable(logging.getLevelName(loglevel.upper()) - 1)
    faust.Worker(stream_app_instance, loglevel=loglevel, quiet=True).execute_from_commandline()


@app.command()
def replay(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k.")] = "ml-100k",
    rate: Annotated[float | None, typer.Option(help="Events per second.")] = None,
    speedup: Annotated[
        float | None, typer.Option(help="Keep the dataset's own gaps, divided by this.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Send only the first N interactions.")] = None,
) -> None:
    """Replay a dataset's items, then its interactions in time order, into Kafka."""
    if rate is not None and speedup is not None:
        _fail("give --rate or --speedup, not both")
    from streams.replay import replay_dataset
    from streams.topics import ensure_topics

    settings = get_settings()
    ensure_topics(settings)
    summary = replay_dataset(settings, dataset, rate=rate, speedup=speedup, limit=limit)
    console.print(summary.describe())


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    host: Annotated[str | None, typer.Option(help="Address (default from settings).")] = None,
) -> None:
    """Run the gRPC server (every built service, health, reflection) until Ctrl-C."""
    import asyncio

    from serving.server import build_servicers, start_server

    settings = get_settings()
    chosen = {"port": port, "host": host}
    settings = settings.model_copy(
        update={
            "serving": settings.serving.model_copy(
                update={key: value for key, value in chosen.items() if value is not None}
            )
        }
    )

    serving = settings.serving
    if serving.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(serving.metrics_port, serving.metrics_host)
        except OSError as error:  # a second server on one host: serve, without /metrics
            console.print(f"no /metrics on port {serving.metrics_port}: {error}")

    async def run() -> None:
        server, bound = await start_server(settings, build_servicers(settings))
        console.print(f"serving on {settings.serving.host}:{bound}")
        try:
            await server.wait_for_termination()
        finally:
            await server.stop(None)

    # SIGTERM (`up` stopping its children, Kubernetes) unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        console.print("stopped")
    except (OSError, RuntimeError) as error:
        _fail(str(error))


def _ensure_served_model(settings, dataset: str) -> None:
    """`up` needs a model to serve: a quick SASRec when the registry has no `seralm` yet."""
    from streamrec.registry import ModelRegistry

    latest = ModelRegistry.from_settings(settings).latest(settings.serving.family)
    if latest is not None:
        console.print(f"serving {latest.family}/{latest.version} from the registry")
        return
    from serving.first_model import train_first_model

    epochs = settings.serving.first_model_epochs
    console.print(
        f"no {settings.serving.family} model in the registry: training a small SASRec on "
        f"{dataset} for {epochs} epochs (a quick first model; the trainer improves on it)"
    )
    version = train_first_model(
        settings, dataset, epochs, max_users=settings.serving.first_model_max_users
    )
    console.print(
        f"published {version.family}/{version.version} in {version.metadata['train_seconds']}s"
    )


def _show_recommendations(settings, dataset: str, server: subprocess.Popen, users: int = 3) -> None:
    """Ask the server started by `up` for a few users' recommendations, and print them."""
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
                if not retry or server.poll() is not None or time.monotonic() > deadline:
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


def _spawn_plane(*args: str) -> subprocess.Popen:
    """Run a plane as a child process of this CLI (same interpreter, same settings)."""
    return subprocess.Popen([sys.executable, "-m", "streamrec.cli", *args])


def _wait_for_rows(settings, dataset: str, expected: int, worker: subprocess.Popen) -> int:
    """Block until the stream worker has stored `expected` rows of this dataset's replay."""
    from rich.progress import Progress

    from streamrec.db import connect

    client = connect(settings)
    query = "SELECT count() FROM interactions FINAL WHERE event_id LIKE %(prefix)s"
    params = {"prefix": f"{dataset}:%"}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("rows stored in ClickHouse", total=expected)
        while True:
            stored = client.execute(query, params)[0][0]
            progress.update(task, completed=min(stored, expected))
            if stored >= expected:
                client.disconnect()
                return stored
            if worker.poll() is not None:
                raise RuntimeError(f"the stream worker exited with code {worker.returncode}")
            time.sleep(0.5)


def _run_knowledge_once(children: list[subprocess.Popen]) -> None:
    """One knowledge run for the catalog (`worker knowledge --once`), waited for; a child
    of `up` meanwhile, so that Ctrl-C stops it too."""
    console.print("knowledge: one run for the catalog (LLM generate + encode; cached texts reused)")
    run = _spawn_plane("worker", "knowledge", "--once")
    children.append(run)
    code = run.wait()
    children.remove(run)
    if code != 0:
        console.print(f"[red]the knowledge run exited with code {code}[/red] (see jobs below)")


def _show_jobs(settings, trainer: subprocess.Popen | None, since: float) -> None:
    """`up`'s summary of the jobs: the knowledge run and the online trainer's state."""
    from streamrec.jobs import list_runs

    deadline = time.monotonic() + settings.ops.up_trainer_wait_s
    trainer_runs = []
    while trainer is not None and trainer.poll() is None and time.monotonic() < deadline:
        trainer_runs = [
            r for r in list_runs(settings, kind="trainer", limit=1) if r.started_at >= since
        ]
        if trainer_runs:
            break
        time.sleep(1)
    runs = [*list_runs(settings, kind="knowledge", limit=1), *trainer_runs]
    if runs:
        _print_runs(runs)
    if trainer is None:
        return
    if trainer.poll() is not None:
        console.print(f"[red]the online trainer exited with code {trainer.returncode}[/red]")
    elif trainer_runs:
        console.print(
            "online trainer: consuming training-examples (`streamrec jobs list --kind trainer`)"
        )
    else:
        console.print("online trainer: started, still loading its model")


@app.command()
def up(
    dataset: Annotated[str, typer.Option(help="Dataset to stream.")] = "ml-100k",
    limit: Annotated[int | None, typer.Option(help="Stream only the first N interactions.")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second.")] = None,
    assets: Annotated[bool, typer.Option(help="Fetch the LLM and encoder when missing.")] = True,
    detach: Annotated[
        bool,
        typer.Option(help="Return once everything is stored, leaving the services running."),
    ] = False,
    knowledge: Annotated[
        bool, typer.Option(help="Run the knowledge job once for the catalog.")
    ] = True,
    trainer: Annotated[bool, typer.Option(help="Run the online trainer.")] = True,
) -> None:
    """The main job: services, schema, data and assets; the stream worker; the dataset
    streamed as live events until every one is stored in ClickHouse; a first model served;
    the online trainer, and one knowledge run for the catalog, with a summary of both.

    Then runs until Ctrl-C, which stops everything it started.
    """
    from streamrec.datasets import fetch_dataset
    from streamrec.db import migrate
    from streamrec.services import LocalServices
    from streams.replay import replay_dataset
    from streams.topics import ensure_topics

    settings = get_settings()
    services = LocalServices(settings)
    already_running = any(info["running"] for info in services.status().values())
    children: list[subprocess.Popen] = []

    def stop_everything() -> None:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if not already_running and not detach:
            console.print("stopping the services started by `up`")
            services.stop()

    # SIGTERM unwinds like Ctrl-C, through the `finally` below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
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
        children.append(_spawn_plane("stream", "worker"))
        summary = replay_dataset(settings, dataset, rate=rate, limit=limit)
        console.print(summary.describe())
        stored = _wait_for_rows(settings, dataset, summary.interactions, children[0])
        console.print(f"ClickHouse holds {stored:,} interactions of {dataset}")
        _ensure_served_model(settings, dataset)
        children.append(_spawn_plane("serve"))
        _show_recommendations(settings, dataset, children[-1])
        jobs_since = int(time.time())
        trainer_child = _spawn_plane("worker", "trainer") if trainer else None
        children.extend([trainer_child] if trainer_child else [])
        if knowledge:
            _run_knowledge_once(children)
        _show_jobs(settings, trainer_child, jobs_since)
        if detach:
            console.print("services left running; `streamrec services stop` stops them")
            return
        console.print("running; Ctrl-C stops everything")
        while all(child.poll() is None for child in children):
            time.sleep(1)
        raise RuntimeError("a plane exited; stopping everything")
    except KeyboardInterrupt:
        console.print("interrupted")
    finally:
        stop_everything()


# --- Recommenders: train and eval ---


def _recommender_setup(settings, model: str, dataset: str, knowledge: str | None, fraction):
    """Protocol data and the variant to train, or a clear error."""
    from pathlib import Path

    import torch

    from models.sequential import model_class_for
    from streamrec.datasets import load_dataset
    from workers.recommender_training import knowledge_variant, protocol_data

    if settings.recommender.threads:
        torch.set_num_threads(settings.recommender.threads)
    try:
        model_class_for(model)
        data = protocol_data(load_dataset(dataset, settings))
        variant, summary = knowledge_variant(
            settings, data, Path(knowledge) if knowledge else None, fraction
        )
    except (FileNotFoundError, ValueError, KeyError) as error:
        _fail(str(error))
    return data, variant, summary


def _epoch_printer(progress, task):
    def on_epoch(seed: int, record: dict) -> None:
        valid = record.get("valid", {})
        progress.update(
            task,
            advance=1,
            description=f"seed {seed} epoch {record['epoch']} loss {record['loss']:.3f} "
            f"valid ndcg@10 {valid.get('ndcg@10', float('nan')):.4f}",
        )

    return on_epoch


@app.command("train")
def train(
    model: Annotated[str, typer.Option(help="sasrec, lightsans, caser, gru4rec or genrec.")],
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "ml-100k",
    knowledge: Annotated[
        str | None, typer.Option(help="Knowledge folder (vectors.npy, item_ids.npy).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 2020,
    fraction: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of training sequences used.")
    ] = 1.0,
    out: Annotated[str | None, typer.Option(help="Checkpoint folder.")] = None,
    publish: Annotated[bool, typer.Option(help="Publish to the model registry.")] = False,
    pretrain: Annotated[
        bool, typer.Option(help="genrec only: masked-item pretraining before fine-tuning.")
    ] = True,
) -> None:
    """Train a recommender (early stopping on valid NDCG@10) and save its checkpoint."""
    if model.lower() == "genrec":  # its own job: see `streamrec genrec train`
        genrec_train(dataset=dataset, pretrain=pretrain, max_steps=None, publish=publish)
        return
    from pathlib import Path

    from rich.progress import Progress

    from workers.recommender_training import checkpoint_folder, publish_checkpoint, run_variant

    settings = get_settings()
    data, variant, summary = _recommender_setup(settings, model, dataset, knowledge, fraction)
    folder = Path(out) if out else checkpoint_folder(settings, dataset, model, variant.name, seed)
    with Progress(console=console) as progress:
        task = progress.add_task("training", total=None)
        row, _ = run_variant(
            settings,
            data,
            model.lower(),
            variant,
            [seed],
            save_to=lambda _seed: folder,
            on_epoch=_epoch_printer(progress, task),
            extra={"knowledge_dir": knowledge, "llm_version": summary.get("llm_version")},
        )
    print(json.dumps(row, indent=1))
    console.print(f"checkpoint written to {folder}")
    if publish:
        version = publish_checkpoint(
            settings,
            folder,
            {
                "metrics": row["metrics"],
                "dataset": dataset,
                "model": model.lower(),
                "variant": variant.name,
                "llm_version": summary.get("llm_version"),
            },
        )
        console.print(f"published {version.family}/{version.version}")


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Option(help="sasrec, lightsans, caser or gru4rec.")],
    json_out: Annotated[str, typer.Option("--json", help="Where to write the JSON rows.")],
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "ml-100k",
    knowledge: Annotated[str | None, typer.Option(help="Knowledge folder.")] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds (default: recommender.seeds).")
    ] = None,
    fraction: Annotated[float, typer.Option(min=0.01, max=1.0)] = 1.0,
    checkpoint: Annotated[
        str | None, typer.Option(help="Evaluate this checkpoint folder instead of training.")
    ] = None,
) -> None:
    """Test metrics under the protocol: one checkpoint, or mean and std over seeds."""
    from pathlib import Path

    from rich.progress import Progress

    settings = get_settings()
    data, variant, _ = _recommender_setup(settings, model, dataset, knowledge, fraction)
    if checkpoint:
        from models.metrics import ranking_metrics
        from models.sequential.checkpoint import load_recommender
        from models.training import rank_targets

        try:
            loaded = load_recommender(Path(checkpoint))
        except (FileNotFoundError, ValueError, KeyError) as error:
            _fail(str(error))
        metrics = ranking_metrics(rank_targets(loaded.model, data.test))
        seed = loaded.extra.get("seed")
        row = {
            "dataset": dataset,
            "model": loaded.model.name,
            "variant": loaded.extra.get("variant", variant.name),
            "seeds": [] if seed is None else [seed],
            "metrics": metrics,
            "std": dict.fromkeys(metrics, 0.0),
            "checkpoint": checkpoint,
        }
    else:
        from workers.recommender_training import run_variant

        try:
            chosen = [int(s) for s in seeds.split(",")] if seeds else settings.recommender.seeds
        except ValueError:
            _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
        with Progress(console=console) as progress:
            task = progress.add_task("training", total=None)
            row, _ = run_variant(
                settings,
                data,
                model.lower(),
                variant,
                chosen,
                on_epoch=_epoch_printer(progress, task),
            )
    Path(json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(json_out).write_text(json.dumps([row], indent=1))
    print(json.dumps(row, indent=1))


# --- Knowledge: generation ---


@knowledge_app.command("generate")
def knowledge_generate(
    dataset: Annotated[str, typer.Option(help="Dataset whose items get knowledge.")] = "ml-100k",
    out: Annotated[
        str | None, typer.Option(help="Output folder (default <data_dir>/knowledge/<dataset>).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N items.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Items per LLM batch.")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Token budget of one answer.")
    ] = None,
    adapter: Annotated[
        str | None,
        typer.Option(help='LoRA adapter: a PEFT folder or "latest" in the registry.'),
    ] = None,
) -> None:
    """Generate LLM knowledge for a dataset's items: texts, vectors and a JSON summary."""
    from pathlib import Path

    from workers.knowledge_job import generate_dataset_knowledge

    settings = get_settings()
    if adapter is not None:
        settings.knowledge.adapter = adapter
    folder = Path(out) if out else settings.data_dir / "knowledge" / dataset
    try:
        summary = generate_dataset_knowledge(
            settings, dataset, folder, limit, batch_size, max_new_tokens
        )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        _fail(str(error))
    print(json.dumps(summary, indent=1))
    console.print(f"knowledge written to {folder}")


# --- Workers: online trainer, knowledge job, scheduler ---


def _serve_worker_metrics(settings) -> None:
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
    _serve_worker_metrics(settings)
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
        _fail(str(error))
    finally:
        trainer.close()


@worker_app.command("knowledge")
def worker_knowledge(
    once: Annotated[bool, typer.Option("--once", help="One run, then exit.")] = False,
    adapter: Annotated[
        str | None,
        typer.Option(help='LoRA adapter: a PEFT folder or "latest" in the registry.'),
    ] = None,
) -> None:
    """Give knowledge to requested items and to every item lacking it for the current LLM."""
    from workers.knowledge_job import KnowledgeJob, load_knowledge_llm

    settings = get_settings()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not once:  # a one-off run is recorded in job_runs, which the ops page exports
        _serve_worker_metrics(settings)
    try:
        job = KnowledgeJob(settings, llm=load_knowledge_llm(settings, adapter=adapter))
        while True:
            outcome = job.run_once()
            console.print(f"knowledge run: {json.dumps(outcome.__dict__)}")
            if once:
                if outcome.failed:
                    raise typer.Exit(code=1)
                return
            time.sleep(settings.knowledge.job_interval_s)
    except KeyboardInterrupt:
        console.print("stopped")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        _fail(str(error))


def _cli_has_command(name: str) -> bool:
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    groups = [g.name for g in app.registered_groups]
    return name in commands or name in groups


@worker_app.command("scheduler")
def worker_scheduler() -> None:
    """Run the daily knowledge job (and periodic alignment, once `align` exists) on schedule."""
    from datetime import UTC, datetime

    from workers.scheduler import build_scheduler, scheduled_jobs

    settings = get_settings()
    try:
        jobs = scheduled_jobs(settings, alignment=_cli_has_command("align"))
    except ValueError as error:
        _fail(f"bad schedule in settings: {error}")
    scheduler = build_scheduler(jobs)
    _serve_worker_metrics(settings)
    now = datetime.now(UTC)
    for job in jobs:
        console.print(f"{job.name}: next run {job.trigger.get_next_fire_time(None, now)}")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        console.print("stopped")


# --- Jobs, for ops ---


def _print_runs(runs) -> None:
    from rich.table import Table

    colours = {
        "succeeded": "green",
        "failed": "red",
        "lost": "red",
        "running": "yellow",
        "stopped": "blue",
    }
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
        colour = colours.get(run.status, "white")
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


@jobs_app.command("list")
def jobs_list(
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status (succeeded, failed, lost...).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Newest runs shown.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The newest job runs, with their figures."""
    from streamrec.jobs import list_runs

    try:
        runs = list_runs(get_settings(), kind=kind, status=status, limit=limit)
    except ValueError as error:
        _fail(str(error))
    except Exception as error:  # the database is down or unreachable
        _fail(f"cannot read job runs: {error}")
    if as_json:
        print(json.dumps([run.as_dict() for run in runs], indent=1))
    else:
        _print_runs(runs)


@jobs_app.command("show")
def jobs_show(run_id: Annotated[str, typer.Argument(help="The run's id.")]) -> None:
    """Every field of one run, its error included."""
    from streamrec.jobs import get_run

    try:
        run = get_run(get_settings(), run_id)
    except Exception as error:
        _fail(f"cannot read job runs: {error}")
    if run is None:
        _fail(f"no job run {run_id}")
    print(json.dumps(run.as_dict(), indent=1))


@jobs_app.command("run")
def jobs_run(kind: Annotated[str, typer.Argument(help="The job: knowledge.")]) -> None:
    """Run one job now, in the foreground, and show its recorded run."""
    from streamrec.jobs import list_runs

    commands = {"knowledge": ["worker", "knowledge", "--once"]}
    if kind not in commands:
        _fail(f"unknown job {kind!r}; runnable jobs: {', '.join(commands)}")
    code = subprocess.call([sys.executable, "-m", "streamrec.cli", *commands[kind]])
    try:
        _print_runs(list_runs(get_settings(), kind=kind, limit=1))
    except Exception as error:  # the job's own message says more
        console.print(f"cannot read job runs: {error}")
    if code != 0:
        _fail(f"the {kind} job exited with code {code}")


@jobs_app.command("page")
def jobs_page(
    port: Annotated[int | None, typer.Option(help="Port of the status page.")] = None,
) -> None:
    """The status page of recent runs (and /metrics of their figures)."""
    import asyncio

    from serving.ops import run_status_page

    settings = get_settings()
    if port is not None:
        settings.ops.page_port = port
    try:
        asyncio.run(run_status_page(settings))
    except KeyboardInterrupt:
        console.print("stopped")


# --- Alignment ---


@app.command()
def align(
    dataset: Annotated[str, typer.Option(help="Dataset to align on.")] = "ml-100k",
    iterations: Annotated[int | None, typer.Option(help="Alignment iterations.")] = None,
    mode: Annotated[str | None, typer.Option(help="async (a generator process) or sync.")] = None,
    resample: Annotated[
        str | None, typer.Option(help="Knowledge re-sampled: last_item, target_item, k_items.")
    ] = None,
    publish: Annotated[
        bool, typer.Option(help="Publish the adapter and the aligned recommender.")
    ] = True,
    regenerate: Annotated[
        bool,
        typer.Option(help="Then regenerate every item's knowledge with the aligned LLM."),
    ] = True,
) -> None:
    """SeRALM alignment: LoRA policy gradient of the LLM against the recommender, with an
    asynchronous generator; publishes `llm-adapter` and `seralm` versions, then runs the
    knowledge job with the new adapter (item_knowledge rows and a rebuilt `seralm`)."""
    from rich.progress import Progress

    from models.alignment.resampling import RESAMPLE_CHOICES
    from streamrec.jobs import JobRecorder
    from workers.alignment.job import run_job
    from workers.alignment.trainer import MODES

    settings = get_settings()
    overrides = {
        key: value
        for key, value in {"iterations": iterations, "mode": mode, "resample": resample}.items()
        if value is not None
    }
    settings = settings.model_copy(
        update={"alignment": settings.alignment.model_copy(update=overrides)}
    )
    chosen = settings.alignment
    if chosen.mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}, not {chosen.mode!r}")
    if chosen.resample not in RESAMPLE_CHOICES:
        _fail(f"--resample must be one of {', '.join(RESAMPLE_CHOICES)}, not {chosen.resample!r}")
    if chosen.iterations < 1 or chosen.refresh_interval < 1:
        _fail("iterations and the refresh interval must be at least 1")
    try:
        with (
            JobRecorder(settings, "alignment") as job,
            Progress(console=console, transient=True) as progress,
        ):
            task = progress.add_task("aligning", total=chosen.iterations)

            def on_iteration(iteration, record) -> None:
                progress.update(
                    task,
                    completed=iteration,
                    description=f"aligning (ratio {record.mean_ratio:.3f}, KL {record.kl:.3f})",
                )
                job.progress(ok=1)

            result = run_job(settings, dataset, on_iteration, publish=publish and chosen.publish)
    except ModuleNotFoundError as error:
        _fail(f"alignment needs {error.name}, which is not installed or not built yet")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        _fail(str(error))
    console.print(json.dumps(result, indent=2))
    if regenerate and "llm_adapter_path" in result:
        from workers.knowledge_job import KnowledgeJob, load_knowledge_llm

        console.print(f"regenerating knowledge with adapter {result['llm_adapter_version']}")
        llm = load_knowledge_llm(settings, adapter=result["llm_adapter_path"])
        outcome = KnowledgeJob(settings, llm=llm).run_once()
        console.print(f"knowledge run: {json.dumps(outcome.__dict__)}")
        if outcome.failed:
            raise typer.Exit(code=1)


# --- GenRec ---

genrec_app = typer.Typer(help="GenRec: generative recommendation with BART.", no_args_is_help=True)
app.add_typer(genrec_app, name="genrec")


@genrec_app.command("train")
def genrec_train(
    dataset: Annotated[str, typer.Option(help="Dataset to train on.")] = "ml-100k",
    pretrain: Annotated[
        bool, typer.Option(help="Masked-item pretraining before fine-tuning.")
    ] = True,
    max_steps: Annotated[
        int | None, typer.Option(help="Cap on optimizer steps per phase (0: none).")
    ] = None,
    publish: Annotated[bool, typer.Option(help="Publish a `genrec` registry version.")] = True,
) -> None:
    """Train GenRec (pretraining, then fine-tuning with the mask appended), evaluate it on
    the valid and test splits, and publish it for GenRecService."""
    from streamrec.jobs import JobRecorder
    from workers.genrec_training import run_training_job

    settings = get_settings()
    if max_steps is not None:
        if max_steps < 0:
            _fail("--max-steps must not be negative")
        settings = settings.model_copy(
            update={"genrec": settings.genrec.model_copy(update={"max_steps": max_steps})}
        )
    try:
        with JobRecorder(settings, "genrec") as job:
            result = run_training_job(
                settings,
                dataset,
                pretrain=pretrain,
                publish=publish,
                on_step=lambda rows, loss: job.progress(ok=rows),
            )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        _fail(str(error))
    console.print(json.dumps(result, indent=2))


# --- RecSysLLM ---

recsysllm_app = typer.Typer(help="RecSysLLM: a LoRA-tuned LLM for recommendation tasks.")
app.add_typer(recsysllm_app, name="recsysllm")


@recsysllm_app.command("train")
def recsysllm_train(
    dataset: Annotated[str, typer.Option(help="Dataset to train on.")] = "ml-100k",
    users: Annotated[int | None, typer.Option(help="Training users (default: settings).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (default: settings).")] = None,
    eval_users: Annotated[int, typer.Option(help="Users evaluated after training.")] = 20,
    publish: Annotated[bool, typer.Option(help="Publish to the registry.")] = True,
) -> None:
    """Train RecSysLLM (LoRA on the default LLM), evaluate it and publish a version."""
    from streamrec.datasets import load_dataset
    from streamrec.jobs import JobRecorder
    from workers import recsysllm_training as training

    settings = get_settings()
    overrides = {k: v for k, v in {"train_users": users, "steps": steps}.items() if v}
    settings = settings.model_copy(
        update={"recsysllm": settings.recsysllm.model_copy(update=overrides)}
    )
    try:
        data = training.dataset_data(load_dataset(dataset, settings))
    except (KeyError, ValueError, FileNotFoundError) as error:
        _fail(str(error))
    config = settings.recsysllm
    chosen = training.sample_users(data, config.train_users, config.seed)
    with JobRecorder(settings, "recsysllm") as job:
        artifact = training.train_recsysllm(settings, data, chosen)
        job.progress(ok=len(chosen))
        held_out = training.sample_users(data, eval_users, config.seed + 7)
        metrics = training.evaluate(settings, artifact, data, held_out)
        console.print(json.dumps(metrics, indent=2))
        if publish:
            metadata = {"dataset": dataset, "metrics": metrics}
            version = training.publish(settings, artifact, metadata)
            console.print(f"published {version.family} {version.version}")


if __name__ == "__main__":
    app()
