"""SeRALM's ablations (paper Table 1 and figure 5) and async-vs-sync speed, written as JSON.

    python -m bench.alignment --json OUT [--dataset ml-100k] [--seeds 0 1 2] ...

Rows in the project's evaluation format, variants:

- `base`: Rec_f, the recommender without knowledge;
- `na_llm`: Rec with the not-aligned LLM's knowledge (before alignment);
- `seralm`: after alignment, the aligned Rec with the aligned LLM's knowledge;
- `a_llm_na_rec`: the not-aligned Rec with the aligned LLM's knowledge;
- `na_llm_a_rec`: the aligned Rec with the not-aligned LLM's knowledge;
- `slow_refresh`: as `seralm`, the generator's snapshot refreshed 60x less often;
- `seralm[target_item]`: as `seralm`, re-sampling the target item's knowledge
  instead of the last history item's (the choice compared);
- `speed`: `{"async_iters_per_s", "sync_iters_per_s"}` on the same models.

Each alignment variant starts from the same Rec and the same zero adapters.
The aligned LLM's knowledge is regenerated for the `--regenerate-items` most
popular items (all items when 0); the others keep the cached knowledge. On a
CPU every knob is small, and the rows' `note` says which.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import evaluation_row, log_progress, parser
from bench.results import write_result
from models.alignment.policy import adapter_state, load_adapter_state
from models.device import resolve_device
from streamrec.settings import get_settings
from workers.alignment.job import (
    align,
    evaluate,
    prepare,
    regenerate_knowledge,
    run_summary,
)
from workers.recommender_training import protocol_data

log = logging.getLogger("bench.alignment")


def _popular_items(dataset, count: int) -> list[int]:
    counts = np.bincount(dataset.splits["train"].targets, minlength=dataset.num_items + 1)
    counts[0] = -1
    order = np.argsort(-counts, kind="stable")
    chosen = order[: count if count else dataset.num_items]
    return sorted(int(item) for item in chosen if item > 0)


def _with(settings, **alignment):
    return settings.model_copy(
        update={"alignment": settings.alignment.model_copy(update=alignment)}
    )


def _na_knowledge(settings, args, out: Path) -> Path:
    """The not-aligned knowledge the bench starts from: the cached folder, with the
    `--regenerate-items` most popular items written by the not-aligned LLM here when
    `--na-items-here` (on a CPU the full catalog's generation does not fit the run)."""
    from models.knowledge.prompts import template_for
    from streamrec.assets import load_llm
    from streamrec.datasets import load_dataset
    from workers.alignment.data import Encoder, item_infos
    from workers.knowledge_pipeline import load_encoder
    from workers.recommender_training import external_ids, load_knowledge

    folder = Path(
        settings.alignment.knowledge_dir or settings.data_dir / "knowledge" / args.dataset
    )
    if not args.na_items_here:
        return folder
    dataset = load_dataset(args.dataset, settings)
    table, summary = load_knowledge(folder, external_ids(dataset))
    llm, tokenizer = load_llm(settings.alignment.llm_path or None, settings)
    table = regenerate_knowledge(
        llm,
        tokenizer,
        template_for(settings.alignment.domain),
        item_infos(dataset),
        _popular_items(dataset, args.regenerate_items),
        Encoder(load_encoder(settings, device="cpu")),
        table,
        args.regenerate_batch_size,
        args.max_new_tokens,
    )
    out.mkdir(parents=True, exist_ok=True)
    items = sorted(dataset.items)
    np.save(out / "vectors.npy", table[items].numpy())
    np.save(out / "item_ids.npy", np.array([dataset.items[i].external_id for i in items]))
    summary = {**summary, "llm_version": "not-aligned", "base_folder": str(folder)}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _seed_rows(settings, args, seed: int) -> tuple[dict[str, dict], dict, dict]:
    """Metrics per variant for one seed, the alignment run figures, and the speed figures."""
    torch.manual_seed(seed)
    settings = _with(settings, seed=seed)
    started = time.perf_counter()
    prepared = prepare(settings, args.dataset)
    parts, dataset = prepared.parts, prepared.dataset
    log.info("seed %d: prepared in %.0fs", seed, time.perf_counter() - started)
    test = protocol_data(dataset).test
    items = _popular_items(dataset, args.regenerate_items)

    def score(model) -> dict:
        return evaluate(model, test, args.eval_users, seed)

    metrics = {"base": score(parts.frozen_recommender), "na_llm": score(parts.recommender)}
    na_rec = copy.deepcopy(parts.recommender)
    initial_adapters = adapter_state(parts.policy)
    runs = {}

    def aligned(variant: str, **overrides) -> tuple[torch.nn.Module, torch.Tensor]:
        load_adapter_state(parts.policy, initial_adapters)
        parts.recommender = copy.deepcopy(na_rec)
        parts.task.resample = overrides.pop("resample", settings.alignment.resample)
        run = align(parts, _with(settings, **overrides))
        runs[variant] = run_summary(run, overrides.get("refresh_interval", args.refresh))
        log.info("seed %d %s: %s", seed, variant, runs[variant])
        table = prepared.aligned_knowledge(items, args.regenerate_batch_size, args.max_new_tokens)
        return parts.recommender, table

    rec, aligned_table = aligned("seralm", refresh_interval=args.refresh)
    metrics["na_llm_a_rec"] = score(rec)
    rec.fusion.set_knowledge(aligned_table)
    metrics["seralm"] = score(rec)
    na_with_aligned = copy.deepcopy(na_rec)
    na_with_aligned.fusion.set_knowledge(aligned_table)
    metrics["a_llm_na_rec"] = score(na_with_aligned)

    rec, table = aligned("slow_refresh", refresh_interval=args.refresh * 60)
    rec.fusion.set_knowledge(table)
    metrics["slow_refresh"] = score(rec)

    rec, table = aligned(
        "seralm[target_item]", refresh_interval=args.refresh, resample="target_item"
    )
    rec.fusion.set_knowledge(table)
    metrics["seralm[target_item]"] = score(rec)

    speed = {}
    for mode in ("async", "sync"):
        load_adapter_state(parts.policy, initial_adapters)
        parts.recommender = copy.deepcopy(na_rec)
        parts.task.resample = settings.alignment.resample
        run = align(
            parts,
            _with(settings, iterations=args.speed_iterations, refresh_interval=args.refresh),
            mode=mode,
        )
        speed[f"{mode}_iters_per_s"] = run.iterations_per_s
        speed[f"{mode}_startup_s"] = run.startup_s
        speed[f"{mode}_reused_batches"] = run.reused_batches
        log.info("seed %d speed %s: %.3f it/s", seed, mode, run.iterations_per_s)
    return metrics, runs, speed


def main(argv: list[str] | None = None) -> int:
    options = parser("alignment", __doc__, dataset=True)
    options.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    options.add_argument("--iterations", type=int, default=None, help="Alignment iterations.")
    options.add_argument("--refresh", type=int, default=None, help="Snapshot refresh interval.")
    options.add_argument("--speed-iterations", type=int, default=20)
    options.add_argument("--batch-size", type=int, default=None)
    options.add_argument("--max-new-tokens", type=int, default=None)
    options.add_argument("--max-examples", type=int, default=None)
    options.add_argument("--pretrain-epochs", type=int, default=None)
    options.add_argument("--eval-users", type=int, default=0, help="Test users (0: all).")
    options.add_argument(
        "--regenerate-items", type=int, default=0, help="Most popular items re-written (0: all)."
    )
    options.add_argument("--regenerate-batch-size", type=int, default=16)
    options.add_argument(
        "--na-items-here",
        action="store_true",
        help="Write those items' not-aligned knowledge here first (the rest stays cached).",
    )
    options.add_argument("--threads", type=int, default=None, help="Torch threads per process.")
    options.add_argument("--note", default="", help="Added to every row's note.")
    args = options.parse_args(argv)
    log_progress()

    settings = get_settings()
    overrides = {
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "max_examples": args.max_examples,
        "pretrain_epochs": args.pretrain_epochs,
        "threads_per_process": args.threads,
        "publish": False,
    }
    settings = _with(settings, **{k: v for k, v in overrides.items() if v is not None})
    chosen = settings.alignment
    args.refresh = args.refresh or chosen.refresh_interval
    args.max_new_tokens = chosen.max_new_tokens
    device = resolve_device(chosen.device)
    note = (
        f"device {device}; LLM {chosen.llm_path or 'SmolLM2-135M-Instruct'}; "
        f"{len(args.seeds)} seed(s); {chosen.iterations} alignment iterations of batch "
        f"{chosen.batch_size}, refresh every {args.refresh}; {chosen.max_new_tokens} new tokens; "
        f"{chosen.max_examples or 'all'} training examples; Rec pretrained "
        f"{chosen.pretrain_epochs} epochs; aligned knowledge regenerated for "
        f"{args.regenerate_items or 'all'} most popular items; "
        f"{args.eval_users or 'all'} test users; re-sampling {chosen.resample}. {args.note}"
    ).strip()

    folder = _na_knowledge(settings, args, args.json.parent / f"{args.json.stem}-na-knowledge")
    settings = _with(settings, knowledge_dir=str(folder))
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    base_llm = f"{summary.get('base_folder', folder)} (LLM: {summary.get('llm', 'unknown')})"
    if args.na_items_here:
        note += (
            f" Not-aligned knowledge: the {args.regenerate_items} most popular items written by"
            f" the not-aligned LLM in this run, the others from {base_llm}."
        )
    per_variant: dict[str, list[dict]] = {}
    runs, speeds = [], []
    for seed in args.seeds:
        metrics, seed_runs, speed = _seed_rows(settings, args, seed)
        for variant, values in metrics.items():
            per_variant.setdefault(variant, []).append(values)
        runs.append(seed_runs)
        speeds.append(speed)

    rows = [
        evaluation_row(args.dataset, chosen.recommender, variant, args.seeds, values, note)
        for variant, values in per_variant.items()
    ]
    for row in rows:
        if row["variant"] in runs[0]:
            row["runs"] = [seed_runs[row["variant"]] for seed_runs in runs]
    rows.append(
        {
            "dataset": args.dataset,
            "model": chosen.recommender,
            "variant": "speed",
            "seeds": args.seeds,
            "async_iters_per_s": statistics.fmean(s["async_iters_per_s"] for s in speeds),
            "sync_iters_per_s": statistics.fmean(s["sync_iters_per_s"] for s in speeds),
            "async_startup_s": statistics.fmean(s["async_startup_s"] for s in speeds),
            "async_reused_batches": [s["async_reused_batches"] for s in speeds],
            "iterations": args.speed_iterations,
            "note": note,
        }
    )
    write_result(args.json, rows)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
