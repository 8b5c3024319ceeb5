"""Knowledge throughput: items/s of generate + encode with the default LLM, by batch size.

    python -m bench.knowledge --json bench/out/knowledge.json \\
        [--batch-sizes 1 2 4 8 16 32 64] [--items 4] [--max-new-tokens 48] [--threads 1]

Each batch size generates knowledge for max(batch size, --items) MovieLens-100K items
(the same first items every time, no cache) and encodes it; the figure is items over the
seconds of both. The CPU and a GPU when there is one (else "gpu": null); `--devices cuda`
measures the GPU alone (bench/gpu.sh: the CPU at batch 256 would take its whole slot). The anchor:
SeRALM reports 2.57 s per item with a 7B LLM on an A100.
"""

from __future__ import annotations

import json
import time

import torch

from bench.common import parser
from bench.results import write_result
from models.knowledge.prompts import template_for
from streamrec.datasets import load_dataset
from streamrec.settings import get_settings
from workers.knowledge_pipeline import (
    dataset_items,
    domain_of,
    load_encoder,
    load_knowledge_llm,
    make_generator,
    parse_counts,
)

DATASET = "ml-100k"


def measure(settings, items, batch_sizes, min_items, max_new_tokens) -> dict:
    llm = load_knowledge_llm(settings)
    encoder = load_encoder(settings)
    template = template_for(domain_of(settings, DATASET))
    by_batch = {}
    for batch_size in batch_sizes:
        chosen = items[: max(batch_size, min_items)]
        generator = make_generator(settings, llm, template, batch_size, max_new_tokens)
        started = time.perf_counter()
        texts = generator.generate(chosen)
        encoder.encode([text.text for text in texts], settings.knowledge.encode_batch_size)
        seconds = time.perf_counter() - started
        by_batch[str(batch_size)] = {
            "items": len(chosen),
            "seconds": round(seconds, 2),
            "items_per_s": round(len(chosen) / seconds, 3),
            "parse": parse_counts(texts),
        }
        print(f"{settings.knowledge.device} batch {batch_size}: {by_batch[str(batch_size)]}")
    best = max(by_batch, key=lambda size: by_batch[size]["items_per_s"])
    one = by_batch.get("1", {}).get("items_per_s")
    return {
        "batch_1_items_per_s": one,
        "best_items_per_s": by_batch[best]["items_per_s"],
        "best_batch": int(best),
        "speedup_best_vs_batch_1": round(by_batch[best]["items_per_s"] / one, 2) if one else None,
        "by_batch": by_batch,
        "llm": llm.name,
        "llm_version": llm.version,
    }


def main() -> None:
    options = parser("knowledge", __doc__, threads=True)
    options.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    options.add_argument("--items", type=int, default=4, help="Fewest items per batch size.")
    options.add_argument("--max-new-tokens", type=int, default=48)
    options.add_argument(
        "--devices", nargs="+", default=["cpu", "cuda"], help="cuda only where there is one"
    )
    args = options.parse_args()

    settings = get_settings()
    settings.knowledge.threads = args.threads
    items = dataset_items(load_dataset(DATASET, settings))
    report = {"llm": None, "cpu": None, "gpu": None}
    if "cpu" in args.devices:
        settings.knowledge.device = "cpu"
        report["cpu"] = measure(settings, items, args.batch_sizes, args.items, args.max_new_tokens)
        report["cpu"]["threads"] = torch.get_num_threads()
    if "cuda" in args.devices and torch.cuda.is_available():
        settings.knowledge.device = "cuda"
        report["gpu"] = measure(settings, items, args.batch_sizes, args.items, args.max_new_tokens)
        report["gpu"]["device"] = torch.cuda.get_device_name()
        report["gpu"]["dtype"] = settings.knowledge.dtype
    measured = [report[side] for side in ("cpu", "gpu") if report[side]]
    report["llm"] = measured[0]["llm"] if measured else None
    for side in measured:
        side.pop("llm")
    report.update(
        {
            "dataset": DATASET,
            "max_new_tokens": args.max_new_tokens,
            "min_items_per_batch_size": args.items,
            "encoder": "all-minilm-l6-v2",
            "anchor": "SeRALM: 2.57 s per item, 7B LLM, one A100",
        }
    )
    write_result(args.json, report)
    print(json.dumps({key: report[key] for key in ("llm", "cpu", "gpu")}, indent=1))


if __name__ == "__main__":
    main()
