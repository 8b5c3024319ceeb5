"""Knowledge throughput: items/s of generate + encode by batch size and variant, and the
whole MovieLens-100K catalog with the defaults.

    python -m bench.knowledge --json bench/results/knowledge.json [--batch-sizes 1 16 64]
        [--variants whole prefix_eager prefix prefix_int8] [--items 4] [--threads 0]
        [--catalog]

Variants, measured in one run on the same items: `whole` prefills every prompt whole (no
prefix cache, float32) with transformers' eager attention, `prefix_eager` reuses the
shared prompt prefix's key/value cache, `prefix` also reads each key/value head once for
its query heads (models/knowledge/attention.py, the CPU default), `prefix_int8` also
quantises the LLM's Linear layers to int8 (torch's dynamic quantisation). Each batch
size generates max(batch size, --items) items (the same first items every time, no text
cache) and encodes them; the figure is items over the seconds of both, with the
generator's prefill and decode split. `--catalog` then times `streamrec knowledge
generate --dataset ml-100k` with the defaults from an empty cache (a child process, its
wall time). `--devices cpu` by default; `--devices cuda` measures a GPU alone
(bench/gpu.sh), without the int8 variant, which is CPU-only. The result's `cpu` and
`gpu` sections hold each device's default variant by batch size. The anchor: SeRALM
reports 2.57 s per item with a 7B LLM on an A100.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import parser
from bench.results import write_result
from models.knowledge.attention import NAME as GROUPED
from models.knowledge.prompts import template_for
from streamrec.datasets import load_dataset
from streamrec.settings import get_settings
from streamrec.terminal import with_overrides
from workers.knowledge_pipeline import (
    dataset_items,
    domain_of,
    load_encoder,
    load_knowledge_llm,
    make_generator,
    parse_counts,
)

DATASET = "ml-100k"
# variant: (prefix cache, int8, the attention on a CPU)
VARIANTS = {
    "whole": (False, False, "eager"),
    "prefix_eager": (True, False, "eager"),
    "prefix": (True, False, GROUPED),
    "prefix_int8": (True, True, GROUPED),
}


def measure(settings, llms, encoder, items, variants, batch_sizes, min_items) -> dict:
    template = template_for(domain_of(settings, DATASET))
    rows = {}
    for batch_size in batch_sizes:  # every variant at one size before the next size
        for variant in variants:
            prefix_cache, int8, attention = VARIANTS[variant]
            if llms[int8].model.device.type == "cpu":
                llms[int8].model.set_attn_implementation(attention)
            chosen = items[: max(batch_size, min_items)]
            chosen_settings = with_overrides(settings, "knowledge", prefix_cache=prefix_cache)
            generator = make_generator(chosen_settings, llms[int8], template, batch_size)
            started = time.perf_counter()
            texts = generator.generate(chosen)
            encoder.encode([text.text for text in texts], settings.knowledge.encode_batch_size)
            seconds = time.perf_counter() - started
            row = {
                "variant": variant,
                "batch_size": batch_size,
                "items": len(chosen),
                "seconds": round(seconds, 2),
                "items_per_s": round(len(chosen) / seconds, 3),
                "parse": parse_counts(texts),
                "generation": generator.stats.summary(),
            }
            rows[f"{variant}/{batch_size}"] = row
            print(json.dumps(row), flush=True)
    return rows


def catalog(threads: int) -> dict:
    """`streamrec knowledge generate` of the whole catalog with the defaults, from an empty
    cache: the figure a new user waits for."""
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as folder:
        env = {**os.environ, "STREAMREC_KNOWLEDGE__CACHE_PATH": f"{folder}/cache.sqlite"}
        if threads:
            env["STREAMREC_KNOWLEDGE__THREADS"] = str(threads)
        command = [str(Path(sys.executable).with_name("streamrec")), "knowledge", "generate"]
        command += ["--dataset", DATASET, "--out", f"{folder}/out"]
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        summary = json.loads(Path(folder, "out", "summary.json").read_text())
    return {
        "command": "streamrec knowledge generate --dataset ml-100k",
        "seconds": round(seconds, 1),
        "summary": summary,
    }


def device_section(rows: dict, variant: str) -> dict:
    """One device's figures in the shape bench/gpu.sh reads: `variant` by batch size, and
    the best of every variant."""
    by_batch = {str(r["batch_size"]): r for r in rows.values() if r["variant"] == variant}
    best = max(rows.values(), key=lambda row: row["items_per_s"])
    return {
        "by_batch": by_batch,
        "best_items_per_s": best["items_per_s"],
        "best_batch": best["batch_size"],
        "best_variant": best["variant"],
    }


def main() -> None:
    options = parser("knowledge", __doc__, threads=True)
    options.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    options.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    options.add_argument("--items", type=int, default=4, help="Fewest items per batch size.")
    options.add_argument("--max-new-tokens", type=int, help="Instead of the setting's.")
    options.add_argument(
        "--devices", nargs="+", default=["cpu"], help="cpu and/or cuda (where there is one)"
    )
    options.add_argument("--catalog", action="store_true", help="Also time the whole catalog.")
    args = options.parse_args()

    settings = get_settings()
    settings.knowledge.threads = args.threads  # 0: the free cores, as the job chooses
    if args.max_new_tokens:
        settings.knowledge.max_new_tokens = args.max_new_tokens
    items = dataset_items(load_dataset(DATASET, settings))
    defaults = settings.knowledge
    default_variant = (
        "prefix_int8" if defaults.int8 else "prefix" if defaults.prefix_cache else "whole"
    )
    sections, measured = {"cpu": None, "gpu": None}, {}
    for device in args.devices:
        if device == "cuda" and not torch.cuda.is_available():
            continue
        settings.knowledge.device = device
        # torch's dynamic int8 quantisation runs on a CPU only.
        variants = [v for v in args.variants if device == "cpu" or not VARIANTS[v][1]]
        llms = {False: load_knowledge_llm(settings)}
        if "prefix_int8" in variants:
            llms[True] = load_knowledge_llm(with_overrides(settings, "knowledge", int8=True))
        encoder = load_encoder(settings)
        rows = measure(settings, llms, encoder, items, variants, args.batch_sizes, args.items)
        side = "cpu" if device == "cpu" else "gpu"
        shown = default_variant if default_variant in variants else variants[0]
        sections[side] = device_section(rows, shown)
        if side == "cpu":
            sections[side]["threads"] = torch.get_num_threads()
        else:
            sections[side].update(device=torch.cuda.get_device_name(), dtype=defaults.dtype)
        measured.setdefault("rows", rows)
        measured.setdefault("variants", variants)
        measured.setdefault("llm", llms[False])
    rows, variants, llm = measured["rows"], measured["variants"], measured["llm"]
    baseline = rows.get(f"{variants[0]}/1", {}).get("items_per_s")
    best = max(rows.values(), key=lambda row: row["items_per_s"])
    report = {
        "batch_1_items_per_s": baseline,
        "batch_1_variant": variants[0],
        "best_items_per_s": best["items_per_s"],
        "best_batch": best["batch_size"],
        "best_variant": best["variant"],
        "speedup_best_vs_batch_1": round(best["items_per_s"] / baseline, 2) if baseline else None,
        "default_variant": default_variant,
        "default_batch_size": defaults.batch_size,
        "catalog_seconds": None,
        "by_variant_and_batch": rows,
        **sections,
        "llm": llm.name,
        "llm_version": llm.version,
        "dataset": DATASET,
        "max_new_tokens": defaults.max_new_tokens,
        "min_items_per_batch_size": args.items,
        "encoder": "all-minilm-l6-v2",
        "anchor": "SeRALM: 2.57 s per item, 7B LLM, one A100",
    }
    if args.catalog:
        report["catalog"] = catalog(args.threads)
        report["catalog_seconds"] = report["catalog"]["seconds"]
    write_result(args.json, report)
    print(json.dumps({key: report[key] for key in list(report)[:9]}, indent=1))


if __name__ == "__main__":
    main()
