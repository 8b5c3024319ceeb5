"""GenRec with and without pretraining (the paper's Table 3) beside SASRec, and serving latency.

    python bench/genrec.py --json OUT [--dataset ml-100k] [--seeds 0] [--max-steps N] ...

Rows in the project's evaluation format: `genrec` `pretrain` and `no_pretrain`
(with `valid_item_rate` among their metrics), `sasrec` `base` trained in the
same run on the same train split, all scored on the same test examples (the
GenRec ranking is its generated top-20 list, so a target outside it ranks
past 20). A last row, `genrec` `serving`, holds GenRecService latency over
loopback gRPC at concurrency 1 and 8 (histories in the request). On a
shared CPU every knob is small; each row's `note` says which.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.genrec import save_genrec
from models.metrics import ranking_metrics, ranks_from_scores
from models.sequential import build_recommender
from streamrec.datasets import load_dataset
from streamrec.settings import get_settings
from workers.genrec_training import (
    evaluate,
    item_and_user_ids,
    next_item_examples,
    train_genrec,
)


def _train_sasrec(dataset, settings, seed: int, epochs: int, max_steps: int, eval_count: int):
    """SASRec (the recommenders' default config) on the same train split, full ranking."""
    torch.manual_seed(seed)
    train = dataset.splits["train"]
    model = build_recommender("sasrec", dataset.num_items + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.recommender.learning_rate)
    histories = torch.as_tensor(train.histories)
    lengths = torch.as_tensor(train.lengths)
    targets = torch.as_tensor(train.targets)
    generator = torch.Generator().manual_seed(seed)
    batch_size, steps = settings.recommender.batch_size, 0
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(targets), generator=generator).split(batch_size):
            if max_steps and steps >= max_steps:
                break
            optimizer.zero_grad(set_to_none=True)
            model.loss(histories[rows], lengths[rows], targets[rows]).backward()
            optimizer.step()
            steps += 1
    seconds = time.perf_counter() - started
    model.eval()
    test = dataset.splits["test"]
    count = eval_count or len(test)
    with torch.no_grad():
        scores = model.full_scores(
            torch.as_tensor(test.histories[:count]), torch.as_tensor(test.lengths[:count])
        )
        ranks = ranks_from_scores(scores, torch.as_tensor(test.targets[:count]))
    return ranking_metrics(ranks), {"steps": steps, "train_seconds": round(seconds, 1)}


async def _latency(settings, folder: Path, histories: list[list[int]], requests: int) -> dict:
    """p50/p95 milliseconds and requests per second at concurrency 1 and 8."""
    import grpc

    from serving.genrec import GenRecServicer
    from serving.server import GENREC, start_server
    from streamrec.registry import ModelRegistry
    from streamrec.v1 import genrec_pb2, genrec_pb2_grpc

    ModelRegistry.from_settings(settings).publish("genrec", folder, {"metrics": {}})
    server, port = await start_server(settings, {GENREC: GenRecServicer(settings)})
    figures = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = genrec_pb2_grpc.GenRecServiceStub(channel)
            k = settings.genrec.default_k
            for concurrency in (1, 8):
                timings: list[float] = []
                queue = list(range(requests))

                async def client(timings=timings, queue=queue):
                    while queue:
                        n = queue.pop()
                        request = genrec_pb2.GenerateRequest(
                            history=histories[n % len(histories)], k=k
                        )
                        began = time.perf_counter()
                        await stub.Generate(request, timeout=60)
                        timings.append(time.perf_counter() - began)

                began = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(concurrency)))
                wall = time.perf_counter() - began
                timings.sort()
                figures[f"concurrency_{concurrency}"] = {
                    "requests": len(timings),
                    "p50_ms": round(1000 * statistics.median(timings), 1),
                    "p95_ms": round(1000 * timings[int(0.95 * (len(timings) - 1))], 1),
                    "requests_per_s": round(len(timings) / wall, 2),
                }
    finally:
        await server.stop(None)
    return figures


def _mean_std(runs: list[dict]) -> tuple[dict, dict]:
    keys = [key for key in runs[0] if isinstance(runs[0][key], int | float)]
    means = {key: float(np.mean([run[key] for run in runs])) for key in keys}
    stds = {key: float(np.std([run[key] for run in runs])) for key in keys}
    return means, stds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="Where to write the rows.")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-steps", type=int, help="Optimizer steps per phase (cap).")
    parser.add_argument("--pretrain-epochs", type=int)
    parser.add_argument("--finetune-epochs", type=int)
    parser.add_argument("--max-history", type=int)
    parser.add_argument("--max-eval", type=int, default=0, help="Test examples (0: all).")
    parser.add_argument("--sasrec-epochs", type=int, default=1)
    parser.add_argument("--sasrec-max-steps", type=int, default=0)
    parser.add_argument("--latency-requests", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="Torch threads (0: default).")
    args = parser.parse_args(argv)
    # Run as a script, this folder leads sys.path and its serving.py would shadow `serving`.
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = get_settings()
    overrides = {
        "max_steps": args.max_steps,
        "pretrain_epochs": args.pretrain_epochs,
        "finetune_epochs": args.finetune_epochs,
        "max_history": args.max_history,
        "max_eval_examples": args.max_eval,
    }
    chosen = settings.genrec.model_copy(
        update={key: value for key, value in overrides.items() if value is not None}
    )
    dataset = load_dataset(args.dataset, settings)
    test = next_item_examples(dataset.splits["test"], chosen.max_history)
    knobs = (
        f"d_model {chosen.d_model}, {chosen.encoder_layers}+{chosen.decoder_layers} layers, "
        f"history {chosen.max_history}, epochs {chosen.pretrain_epochs} pretrain / "
        f"{chosen.finetune_epochs} fine-tune, step cap {chosen.max_steps or 'none'}"
        f"{' (a capped run, not the full schedule)' if chosen.max_steps else ''}, "
        f"test examples {chosen.max_eval_examples or len(test)} of {len(test)}, "
        f"beam {chosen.beam_size}, torch threads {torch.get_num_threads()}"
    )
    runs: dict[str, list[dict]] = {"pretrain": [], "no_pretrain": [], "sasrec": []}
    details: dict[str, list[dict]] = {key: [] for key in runs}
    last_model = None
    for seed in args.seeds:
        for variant in ("no_pretrain", "pretrain"):
            started = time.perf_counter()
            model, summary = train_genrec(dataset, chosen, variant == "pretrain", seed)
            summary["train_seconds"] = round(time.perf_counter() - started, 1)
            metrics = evaluate(model, test, chosen, chosen.default_k, chosen.eval_exclude_seen)
            metrics.pop("examples")
            runs[variant].append(metrics)
            details[variant].append(summary)
            print(variant, seed, json.dumps(metrics), file=sys.stderr, flush=True)
            if variant == "pretrain":
                last_model = model
        metrics, summary = _train_sasrec(
            dataset, settings, seed, args.sasrec_epochs, args.sasrec_max_steps, args.max_eval
        )
        runs["sasrec"].append(metrics)
        details["sasrec"].append(summary)
        print("sasrec", seed, json.dumps(metrics), file=sys.stderr, flush=True)

    rows = []
    for model_name, variant, key, note in (
        ("genrec", "no_pretrain", "no_pretrain", knobs),
        ("genrec", "pretrain", "pretrain", knobs),
        (
            "sasrec",
            "base",
            "sasrec",
            f"SASRec default config, {args.sasrec_epochs} epoch(s), step cap "
            f"{args.sasrec_max_steps or 'none'}, same test examples",
        ),
    ):
        means, stds = _mean_std(runs[key])
        rows.append(
            {
                "dataset": args.dataset,
                "model": model_name,
                "variant": variant,
                "seeds": args.seeds,
                "metrics": means,
                "std": stds,
                "runs": details[key],
                "note": note,
            }
        )

    with tempfile.TemporaryDirectory() as scratch:
        item_ids, user_ids = item_and_user_ids(dataset)
        folder = save_genrec(last_model, Path(scratch) / "genrec", item_ids, user_ids)
        serving_settings = settings.model_copy(
            update={
                "genrec": chosen,
                "registry": settings.registry.model_copy(update={"root": f"{scratch}/registry"}),
                "serving": settings.serving.model_copy(
                    update={"port": 0, "reload_from_topic": False}
                ),
            }
        )
        histories = [
            [int(item_ids[i]) for i in example.history] for example in test[: args.latency_requests]
        ]
        latency = asyncio.run(_latency(serving_settings, folder, histories, args.latency_requests))
    rows.append(
        {
            "dataset": args.dataset,
            "model": "genrec",
            "variant": "serving",
            "seeds": args.seeds[-1:],
            "metrics": latency,
            "note": f"GenRecService over loopback gRPC, k={chosen.default_k}, the pretrain "
            f"model, histories from the request, CPU; {knobs}",
        }
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
