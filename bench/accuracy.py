"""Accuracy of the sequential recommenders on a dataset under RecBole's protocol, as JSON.

    python -m bench.accuracy --json OUT [--dataset ml-100k] [--knowledge DIR]
        [--models sasrec lightsans caser gru4rec] [--seeds 2020 2021 2022]
        [--variants base na_llm facts_only llm_text_only] [--fractions 0.1 0.3]
        [--max-epochs N] [--max-seconds S]

Rows in the project's evaluation format:

- `pop`: most popular training items, the user's earlier items masked (the floor);
- `base`: the ID model; `na_llm`: the ID model + knowledge from the not-aligned LLM
  (the folder `streamrec knowledge generate` writes: each vector encodes the item's
  facts, then the LLM's knowledge);
- `facts_only`, `llm_text_only` (with `--variants`): the two halves of that document
  encoded alone, to tell what the LLM adds;
- `base@F`, `na_llm@F`, ...: SASRec trained on a share F of the users' training
  sequences (the low-resource setting), evaluated on every user.

Caps (`--max-epochs`, `--max-seconds`, fewer seeds) are written into each row's `note`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import evaluation_row, log_progress, parser, use_threads
from bench.results import write_result
from models.knowledge.prompts import template_for
from models.metrics import rank_under_protocol, ranking_metrics
from streamrec.datasets import load_dataset
from streamrec.settings import get_settings
from workers.recommender_training import (
    ProtocolData,
    knowledge_variant,
    protocol_data,
    run_variant,
)

log = logging.getLogger("bench.accuracy")

LOW_RESOURCE_MODEL = "sasrec"
KNOWLEDGE_VARIANTS = ("na_llm", "facts_only", "llm_text_only")


def popularity_row(data: ProtocolData) -> dict:
    """Rank items by training frequency for every test example, earlier items masked."""
    counts = np.bincount(np.concatenate(data.train_sequences), minlength=data.n_items)
    scores = torch.from_numpy(counts.astype(np.float32)).repeat(len(data.test), 1)
    # Break ties by a fixed tiny jitter so equal counts do not share (pessimistic) ranks.
    scores += torch.rand(scores.shape[1], generator=torch.Generator().manual_seed(0)) * 1e-3
    metrics = ranking_metrics(rank_under_protocol(scores, data.test.targets, data.test.masked))
    return evaluation_row(data.dataset_name, "pop", "pop", [], [metrics])


def ablation_knowledge(settings, dataset, source: Path, variant: str, folder: Path) -> Path:
    """A knowledge folder that encodes one part of the default document (facts, then the
    LLM's knowledge): `facts_only` (no LLM at all) or `llm_text_only` (the LLM's knowledge
    from `source`'s texts.jsonl without the facts). Rebuilt every run (seconds), so it
    always matches `source`."""
    from workers.knowledge_pipeline import dataset_items, domain_of, load_encoder

    template = template_for(domain_of(settings, dataset.name))
    items = dataset_items(dataset)
    if variant == "facts_only":
        documents = [template.facts(item) for item in items]
        llm = "none (the item's facts only)"
    else:
        lines = (source / "texts.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        text_of = {int(record["item_id"]): record["text"] for record in records}
        documents = [text_of.get(item.item_id, "") for item in items]
        llm = json.loads((source / "summary.json").read_text()).get("llm_version")
    vectors = load_encoder(settings, device="cpu").encode(documents)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", vectors.astype(np.float32))
    np.save(folder / "item_ids.npy", np.array([item.item_id for item in items], np.int64))
    lines = [
        json.dumps({"item_id": item.item_id, "text": document, "document": document})
        for item, document in zip(items, documents, strict=True)
    ]
    (folder / "texts.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps({"items": len(items), "llm": llm}))
    return folder


def log_epoch(model: str, variant: str):
    def on_epoch(seed: int, record: dict) -> None:
        valid = record.get("valid", {}).get("ndcg@10", float("nan"))
        log.info(
            "%s %s seed %d epoch %d: loss %.4f, valid ndcg@10 %.4f (%.0f s)",
            model,
            variant,
            seed,
            record["epoch"],
            record["loss"],
            valid,
            record["seconds"],
        )

    return on_epoch


def main(argv: list[str] | None = None) -> int:
    options = parser("accuracy", __doc__, dataset=True)
    options.add_argument(
        "--knowledge", help="Knowledge folder (default <data_dir>/knowledge/<dataset>)."
    )
    options.add_argument("--models", nargs="+", default=["sasrec", "lightsans", "caser", "gru4rec"])
    options.add_argument(
        "--variants",
        nargs="+",
        default=["base", "na_llm"],
        choices=["base", *KNOWLEDGE_VARIANTS],
        help="na_llm encodes the default document (the item's facts, then the LLM's "
        "knowledge); facts_only and llm_text_only encode one part of it (the ablation).",
    )
    options.add_argument("--seeds", nargs="+", type=int, help="Default: recommender.seeds.")
    options.add_argument("--fractions", nargs="*", type=float, default=[0.1, 0.3])
    options.add_argument("--max-epochs", type=int, default=0, help="Epoch cap (0: settings).")
    options.add_argument("--max-seconds", type=float, default=0, help="Per-seed time cap.")
    args = options.parse_args(argv)
    log_progress()

    settings = get_settings()
    recommender = settings.recommender
    updates = {}
    if args.max_epochs:
        updates["epochs"] = args.max_epochs
    if args.max_seconds:
        updates["max_seconds"] = args.max_seconds
    settings = settings.model_copy(update={"recommender": recommender.model_copy(update=updates)})
    use_threads(settings.recommender.threads)
    seeds = args.seeds or settings.recommender.seeds
    notes = []
    if len(seeds) < 3:
        notes.append(f"{len(seeds)} seed(s), not 3")
    if args.max_epochs:
        notes.append(f"at most {args.max_epochs} epochs per seed")
    if args.max_seconds:
        notes.append(f"at most {args.max_seconds:g} s per seed")
    note = "; ".join(notes)

    dataset = load_dataset(args.dataset, settings)
    data = protocol_data(dataset)
    source = Path(args.knowledge or settings.data_dir / "knowledge" / args.dataset)
    needs_llm = {"na_llm", "llm_text_only"} & set(args.variants)
    if needs_llm and not (source / "vectors.npy").is_file():
        options.error(f"no knowledge in {source}: run `streamrec knowledge generate` first")
    folders = {"na_llm": source}
    for variant in {"facts_only", "llm_text_only"} & set(args.variants):
        ablation = args.json.parent / "knowledge-ablation" / args.dataset / variant
        folders[variant] = ablation_knowledge(settings, dataset, source, variant, ablation)
    rows = [popularity_row(data)]
    write_result(args.json, rows)
    plan = [(model, variant, 1.0) for model in args.models for variant in args.variants]
    if LOW_RESOURCE_MODEL in args.models:
        plan += [
            (LOW_RESOURCE_MODEL, variant, fraction)
            for fraction in args.fractions
            for variant in args.variants
        ]
    for model, variant_kind, fraction in plan:
        started = time.monotonic()
        knowledge = folders.get(variant_kind)
        variant, summary = knowledge_variant(settings, data, knowledge, fraction, variant_kind)
        row, _ = run_variant(
            settings,
            data,
            model,
            variant,
            seeds,
            on_epoch=log_epoch(model, variant.name),
            note=note,
        )
        if summary:
            row["llm_version"] = summary.get("llm_version") or summary.get("llm")
            row["knowledge_coverage"] = summary.get("coverage")
        row["seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        write_result(args.json, rows)
        log.info("%s %s: ndcg@10 %.4f", model, variant.name, row["metrics"]["ndcg@10"])
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
