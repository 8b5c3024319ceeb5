"""LLM item knowledge offline: a dataset's knowledge files, and SeRALM alignment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import console, fail, with_overrides
from workers.cli.worker import run_knowledge

knowledge_app = typer.Typer(help="LLM item knowledge.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(knowledge_app, name="knowledge")
    app.command()(align)


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
    """A dataset's knowledge files for offline training: texts, vectors and a JSON summary.

    (The catalog's knowledge in ClickHouse is the knowledge job's: `worker knowledge`.)
    """
    from workers.knowledge_pipeline import generate_dataset_knowledge

    settings = with_overrides(get_settings(), "knowledge", adapter=adapter)
    folder = Path(out) if out else settings.data_dir / "knowledge" / dataset
    try:
        summary = generate_dataset_knowledge(
            settings, dataset, folder, limit, batch_size, max_new_tokens
        )
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        fail(str(error))
    print(json.dumps(summary, indent=1))
    console.print(f"knowledge written to {folder}")


def _check_alignment(chosen) -> None:
    from models.alignment.resampling import RESAMPLE_CHOICES
    from workers.alignment.trainer import MODES

    if chosen.mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}, not {chosen.mode!r}")
    if chosen.resample not in RESAMPLE_CHOICES:
        fail(f"--resample must be one of {', '.join(RESAMPLE_CHOICES)}, not {chosen.resample!r}")
    if chosen.iterations < 1 or chosen.refresh_interval < 1:
        fail("iterations and the refresh interval must be at least 1")


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

    from streamrec.jobs import JobRecorder
    from workers.alignment.job import run_job

    settings = with_overrides(
        get_settings(), "alignment", iterations=iterations, mode=mode, resample=resample
    )
    chosen = settings.alignment
    _check_alignment(chosen)
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
        fail(f"alignment needs {error.name}, which is not installed or not built yet")
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        fail(str(error))
    console.print(json.dumps(result, indent=2))
    if regenerate and "llm_adapter_path" in result:
        console.print(f"regenerating knowledge with adapter {result['llm_adapter_version']}")
        try:
            run_knowledge(settings, result["llm_adapter_path"], once=True)
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            fail(str(error))
