"""Offline training: the sequential recommenders (train, eval), GenRec and RecSysLLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import console, epoch_printer, fail, recorded, with_overrides

genrec_app = typer.Typer(help="GenRec: generative recommendation with BART.", no_args_is_help=True)
recsysllm_app = typer.Typer(
    help="RecSysLLM: a LoRA-tuned LLM for recommendation tasks.", no_args_is_help=True
)
MODELS = "sasrec, lightsans, caser or gru4rec"


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)
    app.add_typer(genrec_app, name="genrec")
    app.add_typer(recsysllm_app, name="recsysllm")


def _recommender_setup(settings, model: str, dataset: str, knowledge: str | None, fraction):
    """Protocol data and the variant to train, or a clear error."""
    import torch

    from models.sequential import model_class_for
    from streamrec.datasets import load_dataset
    from workers.recommender_training import knowledge_variant, protocol_data

    if model.lower() == "genrec":
        fail("GenRec has its own command: `streamrec genrec train`")
    if settings.recommender.threads:
        torch.set_num_threads(settings.recommender.threads)
    try:
        model_class_for(model)
        data = protocol_data(load_dataset(dataset, settings))
        variant, summary = knowledge_variant(
            settings, data, Path(knowledge) if knowledge else None, fraction
        )
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(str(error))
    return data, variant, summary


def _trained_row(settings, data, model: str, variant, seeds: list[int], **options) -> dict:
    """The variant trained once per seed, a progress line per epoch; its summary row."""
    from rich.progress import Progress

    from workers.recommender_training import run_variant

    with Progress(console=console) as progress:
        task = progress.add_task("training", total=None)
        on_epoch = epoch_printer(progress, task)
        row, _ = run_variant(
            settings, data, model.lower(), variant, seeds, on_epoch=on_epoch, **options
        )
    return row


def train(
    model: Annotated[str, typer.Option(help=f"{MODELS}.")],
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "ml-100k",
    knowledge: Annotated[
        str | None,
        typer.Option(
            help="Knowledge folder (vectors.npy, facts.npy, item_ids.npy): both channels."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 2020,
    fraction: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of training sequences used.")
    ] = 1.0,
    out: Annotated[str | None, typer.Option(help="Checkpoint folder.")] = None,
    publish: Annotated[bool, typer.Option(help="Publish to the model registry.")] = False,
) -> None:
    """Train a recommender (early stopping on valid NDCG@10) and save its checkpoint."""
    from streamrec import registry
    from workers.recommender_training import checkpoint_folder

    settings = get_settings()
    data, variant, summary = _recommender_setup(settings, model, dataset, knowledge, fraction)
    folder = Path(out) if out else checkpoint_folder(settings, dataset, model, variant.name, seed)
    row = _trained_row(
        settings,
        data,
        model,
        variant,
        [seed],
        save_to=lambda _seed: folder,
        extra={
            "knowledge_dir": knowledge,
            "llm_version": summary.get("llm_version"),
            "knowledge_channels": summary.get("provenance"),
        },
    )
    print(json.dumps(row, indent=1))
    console.print(f"checkpoint written to {folder}")
    if publish:
        version = registry.publish(
            settings,
            settings.recommender.family,
            folder,
            registry.VersionMetadata(
                metrics=row["metrics"],
                llm_version=summary.get("llm_version"),
                extra={
                    "dataset": dataset,
                    "model": model.lower(),
                    "variant": variant.name,
                    "knowledge_channels": summary.get("provenance"),
                },
            ),
        )
        console.print(f"published {version.family}/{version.version}")


def _checkpoint_row(data, variant, dataset: str, checkpoint: str) -> dict:
    """The test metrics of a saved checkpoint, as a row like training's."""
    from models.metrics import ranking_metrics
    from models.sequential import SequentialRecommender
    from models.training import rank_targets

    try:
        loaded = SequentialRecommender.from_pretrained(Path(checkpoint))
    except (FileNotFoundError, ValueError, KeyError) as error:
        fail(str(error))
    metrics = ranking_metrics(rank_targets(loaded.model, data.test))
    seed = loaded.extra.get("seed")
    return {
        "dataset": dataset,
        "model": loaded.model.name,
        "variant": loaded.extra.get("variant", variant.name),
        "seeds": [] if seed is None else [seed],
        "metrics": metrics,
        "std": dict.fromkeys(metrics, 0.0),
        "checkpoint": checkpoint,
    }


def evaluate(
    model: Annotated[str, typer.Option(help=f"{MODELS}.")],
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
    settings = get_settings()
    data, variant, _ = _recommender_setup(settings, model, dataset, knowledge, fraction)
    if checkpoint:
        row = _checkpoint_row(data, variant, dataset, checkpoint)
    else:
        try:
            chosen = [int(s) for s in seeds.split(",")] if seeds else settings.recommender.seeds
        except ValueError:
            fail(f"--seeds must be comma-separated integers, got {seeds!r}")
        row = _trained_row(settings, data, model, variant, chosen)
    Path(json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(json_out).write_text(json.dumps([row], indent=1))
    print(json.dumps(row, indent=1))


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
    from workers.genrec_training import run_training_job

    if max_steps is not None and max_steps < 0:
        fail("--max-steps must not be negative")
    settings = with_overrides(get_settings(), "genrec", max_steps=max_steps)
    result = recorded(
        settings,
        "genrec",
        lambda job: run_training_job(
            settings,
            dataset,
            pretrain=pretrain,
            publish=publish,
            on_step=lambda rows, loss: job.progress(ok=rows),
        ),
        (FileNotFoundError, ValueError, RuntimeError),
    )
    console.print(json.dumps(result, indent=2))


@recsysllm_app.command("train")
def recsysllm_train(
    dataset: Annotated[str, typer.Option(help="Dataset to train on.")] = "ml-100k",
    users: Annotated[int | None, typer.Option(help="Training users (default: settings).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (default: settings).")] = None,
    eval_users: Annotated[int, typer.Option(help="Users evaluated after training.")] = 20,
    publish: Annotated[bool, typer.Option(help="Publish to the registry.")] = True,
) -> None:
    """Train RecSysLLM (LoRA on the default LLM), evaluate it and publish a version."""
    from workers.recsysllm_training import run_training_job

    settings = with_overrides(get_settings(), "recsysllm", train_users=users, steps=steps)
    result = recorded(
        settings,
        "recsysllm",
        lambda job: run_training_job(
            settings,
            dataset,
            eval_users=eval_users,
            publish_version=publish,
            on_trained=lambda count: job.progress(ok=count),
        ),
        (KeyError, ValueError, FileNotFoundError),
    )
    console.print(json.dumps(result, indent=2))
