"""SeRALM's ablations (paper Table 1 and figure 5) and async-vs-sync speed, written as JSON.

    python -m bench.alignment --json OUT [--dataset ml-100k] [--seeds 0 1 2] ...
    python -m bench.alignment --json OUT --cpu    # one seed: base, na_llm, seralm on a CPU

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
The aligned LLM's knowledge is regenerated for the items the evaluation needs
(`workers.alignment.job.evaluation_items`: the evaluated users' targets and
re-sampled items, plus `--popular-items`); the others keep the cached
knowledge. Each aligned variant's curves (mean p(y|x,s)/p(y|x), KL, Rec and
LLM loss per iteration) and a sample of its generated texts every 50
iterations go in the JSON, which is rewritten every `--write-every`
iterations, so a run cut short keeps what it measured. `--cpu` is the run
that fits a 2-core machine: one seed, base against na_llm against seralm,
small knobs (each overridable). The rows' `note` says which knobs ran.
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
    evaluation_items,
    prepare,
    regenerate_knowledge,
    run_summary,
)
from workers.recommender_training import protocol_data

log = logging.getLogger("bench.alignment")


ALIGNED = ("seralm", "slow_refresh", "seralm[target_item]")
TEXTS_EVERY = 50  # iterations between kept samples of the generated texts
# `--cpu`: what fits 300 iterations and the evaluation in under 2 hours on 2 busy cores.
CPU_KNOBS = {
    "iterations": 300,
    "batch_size": 2,
    "max_new_tokens": 24,
    "pretrain_epochs": 10,
    "eval_users": 100,
    "refresh": 25,
    "threads": 1,
    "popular_items": 0,
}


def _with(settings, **alignment):
    return settings.model_copy(
        update={"alignment": settings.alignment.model_copy(update=alignment)}
    )


def _needed_items(settings, args, dataset) -> list[int]:
    """The items every seed's evaluation regenerates (`evaluation_items`, over the seeds)."""
    from workers.recommender_training import protocol_data

    chosen, test = settings.alignment, protocol_data(dataset).test
    items = set()
    for seed in args.seeds:
        items |= set(
            evaluation_items(
                dataset, test, args.eval_users, seed, chosen.resample, chosen.k_items,
                args.popular_items,
            )
        )  # fmt: skip
    return sorted(items)


def _na_knowledge(settings, args, out: Path, items: list[int]) -> Path:
    """The not-aligned knowledge the bench starts from: the cached folder, with `items`
    written by the not-aligned LLM here when `--na-items-here` (on a CPU the full
    catalog's generation does not fit the run). Without a cached folder only `items`
    have knowledge (the others a zero vector)."""
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
    ids = [dataset.items[i].external_id for i in items]
    base = str(folder) if (folder / "vectors.npy").is_file() else None
    if _written_before(out, ids, base, args.max_new_tokens):
        log.info("not-aligned knowledge of those %d items: reused from %s", len(items), out)
        return out
    device = str(resolve_device(settings.alignment.device))
    encode = Encoder(load_encoder(settings, device=device))
    if base:
        table, summary = load_knowledge(folder, external_ids(dataset))
        summary["base_folder"] = str(folder)
    else:
        table = torch.zeros(dataset.num_items + 1, encode(["-"]).shape[1])
        summary = {"base_folder": None}
    llm, tokenizer = load_llm(settings.alignment.llm_path or None, settings, device=device)
    template, infos = template_for(settings.alignment.domain), item_infos(dataset)
    table = regenerate_knowledge(
        llm,
        tokenizer,
        template,
        infos,
        items,
        encode,
        table,
        args.regenerate_batch_size,
        args.max_new_tokens,
    )
    out.mkdir(parents=True, exist_ok=True)
    kept = [item for item in sorted(dataset.items) if bool(table[item].any())]
    np.save(out / "vectors.npy", table[kept].numpy())
    # The facts channel of the same items, as `knowledge generate` writes it.
    np.save(out / "facts.npy", np.asarray(encode([template.facts(infos[i]) for i in kept])))
    np.save(out / "item_ids.npy", np.array([dataset.items[i].external_id for i in kept]))
    summary = {
        **summary,
        "llm_version": "not-aligned",
        "items_written_here": len(items),
        "items": ids,
        "max_new_tokens": args.max_new_tokens,
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _written_before(out: Path, ids: list[int], base: str | None, max_new_tokens: int) -> bool:
    """Whether `out` already holds these items' not-aligned knowledge over the same base (a
    rerun skips the generation). Without a base the folder holds exactly those items."""
    try:
        done = json.loads((out / "summary.json").read_text())
        written = done.get("items")
        if written is None and done.get("base_folder") is None:
            written = np.load(out / "item_ids.npy").tolist()
    except (OSError, ValueError):
        return False
    return (
        (out / "facts.npy").is_file()
        and written == ids
        and done.get("base_folder") == base
        and done.get("max_new_tokens", max_new_tokens) == max_new_tokens
    )


class Report:
    """What the bench has measured so far, rewritten to the JSON as it goes."""

    def __init__(self, args, model: str, note: str):
        self.args, self.model, self.note = args, model, note
        self.per_variant: dict[str, dict[int, dict]] = {}
        self.runs: dict[str, dict[int, dict]] = {}
        self.speeds: list[dict] = []
        self.curves: dict[str, dict] = {}
        self.texts: list[dict] = []

    def metrics(self, seed: int, variant: str, values: dict) -> None:
        self.per_variant.setdefault(variant, {})[seed] = values
        self.write()

    def curve(self, seed: int, variant: str):
        """A progress callback that keeps one aligned run's curves and sampled texts."""
        curve = {"mean_ratio": [], "kl": [], "rec_loss": [], "llm_loss": [], "fresh": []}
        self.curves[f"{variant} seed {seed}"] = curve

        def on_iteration(iteration: int, record) -> None:
            for name in ("mean_ratio", "kl", "rec_loss", "llm_loss"):
                curve[name].append(round(getattr(record, name), 5))
            curve["fresh"].append(int(record.fresh))
            if iteration == 1 or iteration % TEXTS_EVERY == 0:
                self.texts.append(
                    {"variant": variant, "seed": seed, "iteration": iteration,
                     "texts": record.texts[:2]}
                )  # fmt: skip
            if iteration % self.args.write_every == 0:
                self.write()

        return on_iteration

    def rows(self) -> list[dict]:
        args = self.args
        rows = []
        for variant, by_seed in self.per_variant.items():
            seeds = sorted(by_seed)
            values = [by_seed[seed] for seed in seeds]
            row = evaluation_row(args.dataset, self.model, variant, seeds, values, self.note)
            if variant in self.runs:
                row["runs"] = [self.runs[variant][seed] for seed in seeds]
            rows.append(row)
        if self.speeds:
            speeds = self.speeds
            rows.append(
                {
                    "dataset": args.dataset,
                    "model": self.model,
                    "variant": "speed",
                    "seeds": [s["seed"] for s in speeds],
                    "async_iters_per_s": statistics.fmean(s["async_iters_per_s"] for s in speeds),
                    "sync_iters_per_s": statistics.fmean(s["sync_iters_per_s"] for s in speeds),
                    "async_startup_s": statistics.fmean(s["async_startup_s"] for s in speeds),
                    "async_reused_batches": [s["async_reused_batches"] for s in speeds],
                    "iterations": args.speed_iterations,
                    "note": self.note,
                }
            )
        return rows

    def write(self, complete: bool = False) -> dict:
        payload = {
            "complete": complete,
            "rows": self.rows(),
            "curves": self.curves,
            "texts": self.texts,
        }
        write_result(self.args.json, payload)
        return payload


def _seed_rows(settings, args, seed: int, items: list[int], report: Report) -> None:
    """Every variant's metrics for one seed (and the speed figures unless `--cpu`)."""
    torch.manual_seed(seed)
    settings = _with(settings, seed=seed)
    started = time.perf_counter()
    prepared = prepare(settings, args.dataset)
    parts, dataset = prepared.parts, prepared.dataset
    log.info("seed %d: prepared in %.0fs", seed, time.perf_counter() - started)
    test = protocol_data(dataset).test

    def score(variant: str, model) -> None:
        report.metrics(seed, variant, evaluate(model, test, args.eval_users, seed))

    score("base", parts.frozen_recommender)
    score("na_llm", parts.recommender)
    na_rec = copy.deepcopy(parts.recommender)
    initial_adapters = adapter_state(parts.policy)

    def aligned(variant: str, **overrides) -> tuple[torch.nn.Module, torch.Tensor]:
        load_adapter_state(parts.policy, initial_adapters)
        parts.recommender = copy.deepcopy(na_rec)
        parts.task.resample = overrides.pop("resample", settings.alignment.resample)
        progress = report.curve(seed, variant)
        stop_at = time.monotonic() + 60 * args.align_minutes if args.align_minutes else None
        run = align(
            parts, _with(settings, **overrides), progress=progress, keep_texts=True, stop_at=stop_at
        )
        summary = run_summary(run, overrides.get("refresh_interval", args.refresh))
        report.runs.setdefault(variant, {})[seed] = summary
        log.info("seed %d %s: %s", seed, variant, summary)
        table = prepared.aligned_knowledge(items, args.regenerate_batch_size, args.max_new_tokens)
        return parts.recommender, table

    rec, aligned_table = aligned("seralm", refresh_interval=args.refresh)
    if not args.cpu:
        score("na_llm_a_rec", rec)
    rec.fusion.set_knowledge(aligned_table)
    score("seralm", rec)
    if args.cpu:
        return
    na_with_aligned = copy.deepcopy(na_rec)
    na_with_aligned.fusion.set_knowledge(aligned_table)
    score("a_llm_na_rec", na_with_aligned)

    rec, table = aligned("slow_refresh", refresh_interval=args.refresh * 60)
    rec.fusion.set_knowledge(table)
    score("slow_refresh", rec)

    rec, table = aligned(
        "seralm[target_item]", refresh_interval=args.refresh, resample="target_item"
    )
    rec.fusion.set_knowledge(table)
    score("seralm[target_item]", rec)

    speed = {"seed": seed}
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
    report.speeds.append(speed)
    report.write()


def main(argv: list[str] | None = None) -> int:
    options = parser("alignment", __doc__, dataset=True)
    options.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    options.add_argument(
        "--cpu", action="store_true", help="One seed of base, na_llm and seralm, CPU-sized."
    )
    options.add_argument("--iterations", type=int, default=None, help="Alignment iterations.")
    options.add_argument(
        "--align-minutes",
        type=float,
        default=None,
        help="Stop each alignment run after this long (its evaluation still runs).",
    )
    options.add_argument("--refresh", type=int, default=None, help="Snapshot refresh interval.")
    options.add_argument("--speed-iterations", type=int, default=20)
    options.add_argument("--batch-size", type=int, default=None)
    options.add_argument("--max-new-tokens", type=int, default=None)
    options.add_argument("--max-examples", type=int, default=None)
    options.add_argument("--pretrain-epochs", type=int, default=None)
    options.add_argument("--eval-users", type=int, default=None, help="Test users (0: all).")
    options.add_argument(
        "--popular-items",
        type=int,
        default=None,
        help="Most popular items regenerated beside those the evaluation needs.",
    )
    options.add_argument("--regenerate-batch-size", type=int, default=16)
    options.add_argument(
        "--na-items-here",
        action="store_true",
        help="Write those items' not-aligned knowledge here first (the rest stays cached).",
    )
    options.add_argument(
        "--na-dir", type=Path, default=None, help="Where those are written (<data_dir>/bench/...)."
    )
    options.add_argument("--threads", type=int, default=None, help="Torch threads per process.")
    options.add_argument("--write-every", type=int, default=25, help="Iterations between writes.")
    options.add_argument("--note", default="", help="Added to every row's note.")
    args = options.parse_args(argv)
    log_progress()

    settings = get_settings()
    if args.cpu:
        args.seeds = args.seeds[:1]
        args.na_items_here = True
        for name, value in CPU_KNOBS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    overrides = {
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "max_examples": args.max_examples,
        "pretrain_epochs": args.pretrain_epochs,
        "threads_per_process": args.threads,
        "eval_users": args.eval_users,
        "regenerate_popular_items": args.popular_items,
        "publish": False,
    }
    settings = _with(settings, **{k: v for k, v in overrides.items() if v is not None})
    chosen = settings.alignment
    args.refresh = args.refresh or chosen.refresh_interval
    args.max_new_tokens = chosen.max_new_tokens
    args.eval_users = chosen.eval_users
    args.popular_items = chosen.regenerate_popular_items
    if args.threads:
        torch.set_num_threads(args.threads)
    from streamrec.datasets import load_dataset

    items = _needed_items(settings, args, load_dataset(args.dataset, settings))
    device = resolve_device(chosen.device)
    note = (
        f"device {device}; LLM {chosen.llm_path or 'SmolLM2-135M-Instruct'}; "
        f"{len(args.seeds)} seed(s); {chosen.iterations} alignment iterations of batch "
        f"{chosen.batch_size} (stopping after {args.align_minutes or 'no limit of'} minutes; "
        f"the runs' `iterations` say how many ran), refresh every {args.refresh}; "
        f"{chosen.max_new_tokens} new tokens; "
        f"{chosen.max_examples or 'all'} training examples; Rec pretrained at most "
        f"{chosen.pretrain_epochs} epochs; aligned knowledge regenerated for {len(items)} items "
        f"(the evaluated users' targets and last items, plus the {args.popular_items} most "
        f"popular); {args.eval_users or 'all'} test users; re-sampling {chosen.resample}; "
        f"{chosen.mode} mode. "
        f"{args.note}"
    ).strip()

    na_dir = args.na_dir or settings.data_dir / "bench" / f"{args.json.stem}-na-knowledge"
    folder = _na_knowledge(settings, args, Path(na_dir), items)
    settings = _with(settings, knowledge_dir=str(folder))
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if args.na_items_here:
        base = summary.get("base_folder")
        note += (
            f" Not-aligned knowledge: those {len(items)} items written by the not-aligned LLM"
            f" in this run, the others "
            + (f"from {base} (LLM: {summary.get('llm', 'unknown')})." if base else "none (zero).")
        )
    report = Report(args, chosen.recommender, note)
    for seed in args.seeds:
        _seed_rows(settings, args, seed, items, report)
    payload = report.write(complete=True)
    print(json.dumps(payload["rows"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
