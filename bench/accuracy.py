"""What item knowledge buys the sequential recommenders, under RecBole's protocol, as JSON.

    python -m bench.accuracy --json OUT [--dataset ml-100k] [--knowledge DIR]
        [--models sasrec lightsans caser gru4rec] [--seeds 2020 2021 2022]
        [--variants base facts_only llm_only two_channels]
        [--cold-fraction 0.3] [--cold-models sasrec] [--wait-knowledge S]
        [--max-epochs N] [--max-seconds S]

One row per model and variant:

- `base`: the ID model; `facts_only`: + the facts channel (the item's title, year and
  genres, encoded alone); `llm_only`: + the LLM channel (the LLM's knowledge from the
  folder `streamrec knowledge generate` writes, encoded alone); `two_channels`: both,
  each with its own projection and learned gate (`models/knowledge/fusion.py`);
- `metrics`: the full ranking's figures over every test target (mean over seeds, `std`);
- `tail`: the same on the test targets among the least popular half of the items
  (training interactions), where an ID embedding has least to learn from;
- `cold` (the `--cold-models`): a second training on a share `--cold-fraction` of the
  users' training sequences, its figures on the test targets no sampled sequence holds;
- `gates`: each channel's learned gate (mean over seeds).

Both channels are encoded again every run (seconds; the LLM's from the folder's
texts.jsonl), so an older folder (one vector of facts then the LLM's text) serves too.
The LLM variants run after the others: `--wait-knowledge` lets a `knowledge generate`
still running finish.
The JSON is rewritten after each training; caps are written into each row's `note`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import log_progress, parser, use_threads
from bench.results import write_result
from models.knowledge.prompts import template_for
from models.metrics import ranking_metrics
from streamrec.datasets import load_dataset
from streamrec.settings import get_settings
from workers.recommender_training import (
    ProtocolData,
    knowledge_variant,
    protocol_data,
    run_variant,
    sample_sequences,
)

log = logging.getLogger("bench.accuracy")

VARIANTS = {  # name: the knowledge channels it reads
    "base": (),
    "facts_only": ("facts",),
    "llm_only": ("llm",),
    "two_channels": ("facts", "llm"),
}
FIGURES = ("ndcg@10", "hr@10")


def facts_channel(settings, dataset, folder: Path) -> Path:
    """A knowledge folder with the facts channel: facts.npy (each item's facts encoded
    alone by the text encoder), item_ids.npy and summary.json. No LLM is needed."""
    from workers.knowledge_pipeline import dataset_items, domain_of, load_encoder

    template = template_for(domain_of(settings, dataset.name))
    items = dataset_items(dataset)
    encoder = load_encoder(settings, device="cpu")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "facts.npy", encoder.encode([template.facts(item) for item in items]))
    np.save(folder / "item_ids.npy", np.array([item.item_id for item in items], np.int64))
    facts = {"source": f"{dataset.name} item facts ({template.domain})", "encoder": encoder.name}
    summary = {"items": len(items), "channels": {"facts": facts}}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return folder


def add_llm_channel(settings, dataset, source: Path, folder: Path) -> None:
    """The LLM channel into `folder` (made by `facts_channel`): vectors.npy, the LLM's
    knowledge in `source`'s texts.jsonl encoded alone (an item without text: zeros)."""
    from workers.knowledge_pipeline import load_encoder

    lines = (source / "texts.jsonl").read_text().splitlines()
    text_of = {int(r["item_id"]): r["text"] for r in map(json.loads, filter(str.strip, lines))}
    ids = np.load(folder / "item_ids.npy")
    rows = [row for row, item in enumerate(ids.tolist()) if text_of.get(item)]
    encoder = load_encoder(settings, device="cpu")
    table = np.zeros((len(ids), encoder.dim), np.float32)
    table[rows] = encoder.encode([text_of[int(ids[row])] for row in rows])
    np.save(folder / "vectors.npy", table)
    generated = json.loads((source / "summary.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    summary["channels"]["llm"] = {"encoder": encoder.name, "items_with_text": len(rows)}
    for key in ("llm", "llm_version", "prompt_version", "max_new_tokens"):
        summary[key] = generated.get(key)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))


def wait_for(source: Path, seconds: float) -> None:
    """Until `source/summary.json` exists (the last file `knowledge generate` writes)."""
    deadline = time.monotonic() + seconds
    while not (source / "summary.json").is_file() and time.monotonic() < deadline:
        log.info("waiting for %s (knowledge generate still running?)", source)
        time.sleep(30)


def tail_items(data: ProtocolData) -> np.ndarray:
    """The least popular half of the real items by training interactions (ties by id)."""
    counts = np.bincount(np.concatenate(data.train_sequences), minlength=data.n_items)[1:]
    order = np.argsort(counts, kind="stable") + 1
    return order[: len(order) // 2]


def subset_figures(runs, masks: list[torch.Tensor]) -> dict:
    """FIGURES over each run's test targets where its mask holds (mean over seeds), and the
    mean count of those targets."""
    per_seed = [ranking_metrics(run.ranks[mask]) for run, mask in zip(runs, masks, strict=True)]
    figures = {name: float(np.mean([m[name] for m in per_seed])) for name in FIGURES}
    return {**figures, "targets": float(np.mean([int(mask.sum()) for mask in masks]))}


def cold_masks(data: ProtocolData, fraction: float, seeds: list[int]) -> list[torch.Tensor]:
    """Per seed: the test targets that none of the seed's sampled training sequences holds."""
    masks = []
    for seed in seeds:
        seen = np.zeros(data.n_items, dtype=bool)
        seen[np.concatenate(sample_sequences(data.train_sequences, fraction, seed))] = True
        masks.append(torch.from_numpy(~seen[data.test.targets.numpy()]))
    return masks


def log_epoch(model: str, variant: str):
    def on_epoch(seed: int, record: dict) -> None:
        valid = record.get("valid", {}).get("ndcg@10", float("nan"))
        log.info(
            "%s %s seed %d epoch %d: loss %.4f, valid ndcg@10 %.4f (%.0f s)",
            *(model, variant, seed, record["epoch"], record["loss"], valid, record["seconds"]),
        )

    return on_epoch


def arguments(argv):
    options = parser("accuracy", __doc__, dataset=True)
    options.add_argument(
        "--knowledge", help="Knowledge folder (default <data_dir>/knowledge/<dataset>)."
    )
    options.add_argument("--models", nargs="+", default=["sasrec", "lightsans", "caser", "gru4rec"])
    options.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    options.add_argument("--seeds", nargs="+", type=int, help="Default: recommender.seeds.")
    options.add_argument("--cold-fraction", type=float, default=0.3, help="0: no cold run.")
    options.add_argument("--cold-models", nargs="*", default=["sasrec"])
    options.add_argument(
        "--wait-knowledge", type=float, default=0, help="Seconds to wait for the folder."
    )
    options.add_argument("--max-epochs", type=int, default=0, help="Epoch cap (0: settings).")
    options.add_argument("--max-seconds", type=float, default=0, help="Per-seed time cap.")
    return options, options.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options, args = arguments(argv)
    log_progress()
    settings = get_settings()
    updates = {"epochs": args.max_epochs} if args.max_epochs else {}
    if args.max_seconds:
        updates["max_seconds"] = args.max_seconds
    recommender = settings.recommender.model_copy(update=updates)
    settings = settings.model_copy(update={"recommender": recommender})
    use_threads(settings.recommender.threads)
    seeds = args.seeds or settings.recommender.seeds
    notes = [f"{len(seeds)} seed(s), not 3"] if len(seeds) < 3 else []
    if args.max_epochs:
        notes.append(f"at most {args.max_epochs} epochs per seed")
    if args.max_seconds:
        notes.append(f"at most {args.max_seconds:g} s per seed")
    note = "; ".join(notes)

    dataset = load_dataset(args.dataset, settings)
    data = protocol_data(dataset)
    source = Path(args.knowledge or settings.data_dir / "knowledge" / args.dataset)
    tail = torch.from_numpy(np.isin(data.test.targets.numpy(), tail_items(data)))
    cold = cold_masks(data, args.cold_fraction, seeds) if args.cold_fraction else None
    folder = facts_channel(
        settings, dataset, settings.data_dir / "knowledge" / f"{args.dataset}-channels"
    )
    with_llm = False
    rows: dict[tuple[str, str], dict] = {}
    # The variants without the LLM first: the LLM's folder may still be being written.
    plan = [
        (model, variant, fraction)
        for needs_llm in (False, True)
        for variant in args.variants
        if ("llm" in VARIANTS[variant]) == needs_llm
        for model in args.models
        for fraction in (1.0, *([args.cold_fraction] if cold and model in args.cold_models else []))
    ]
    for model, name, fraction in plan:
        if "llm" in VARIANTS[name] and not with_llm:
            wait_for(source, args.wait_knowledge)
            if not (source / "texts.jsonl").is_file():
                options.error(f"no knowledge in {source}: run `streamrec knowledge generate`")
            add_llm_channel(settings, dataset, source, folder)
            with_llm = True
        started = time.monotonic()
        variant, summary = knowledge_variant(
            settings, data, folder if VARIANTS[name] else None, fraction, name, VARIANTS[name]
        )
        row, runs = run_variant(
            settings,
            data,
            model,
            variant,
            seeds,
            on_epoch=log_epoch(model, variant.name),
            note=note,
        )
        if fraction < 1:
            rows[model, name]["cold"] = {
                "fraction": fraction,
                **subset_figures(runs, cold),
                "overall": {figure: row["metrics"][figure] for figure in FIGURES},
                "seconds": round(time.monotonic() - started, 1),
            }
        else:
            row["tail"] = subset_figures(runs, [tail] * len(runs))
            if summary:
                row["gates"] = {
                    channel: float(np.mean([run.model.fusion.gates()[channel] for run in runs]))
                    for channel in VARIANTS[name]
                }
                row["llm_version"] = summary.get("llm_version")
                row["knowledge_coverage"] = summary.get("coverage")
                row["provenance"] = summary["provenance"]
            row["seconds"] = round(time.monotonic() - started, 1)
            rows[model, name] = row
        write_result(args.json, [rows[key] for key in sorted(rows, key=ordered(args))])
        log.info("%s %s: ndcg@10 %.4f", model, variant.name, row["metrics"]["ndcg@10"])
    print(json.dumps(list(rows.values()), indent=1))
    return 0


def ordered(args):
    """Rows by model, then variant, in the order asked for."""
    return lambda key: (args.models.index(key[0]), args.variants.index(key[1]))


if __name__ == "__main__":
    sys.exit(main())
