"""GenRec with and without pretraining (the paper's Table 3) beside SASRec, and serving latency.

    python -m bench.genrec --json OUT [--dataset ml-100k] [--seeds 2020] [--variants ...]

Rows in the project's evaluation format: `genrec` `pretrain` and `no_pretrain`
(with `valid_item_rate` among their metrics) and `sasrec` `base`, trained on
the same train split and scored on the same test examples under the
recommenders' protocol: every earlier item of the user is masked (GenRec's
beams never spell one), and GenRec's ranking is its generated top-20 list, so
a target outside it ranks past 20. SASRec trains as `bench.accuracy` trains
it (the recommender settings, early stopping on validation). A last row,
`genrec` `serving`, holds GenRecService latency over loopback gRPC at
concurrency 1 and 8 (histories in the request). `--variants` splits the work
across processes; `step_time` times training steps per ID writing and
attention dropout. Each row's `note` says which knobs were used.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import evaluation_row, log_progress, parser, percentile, use_threads
from bench.results import write_result
from models.genrec import GenRec
from models.training import evaluate as sequential_evaluate
from streamrec.datasets import load_dataset
from streamrec.settings import get_settings
from workers.genrec_training import (
    evaluate,
    evaluation_examples,
    item_and_user_ids,
    next_item_examples,
    train_genrec,
)
from workers.recommender_training import Variant, protocol_data, run_variant

GENREC_VARIANTS = ("no_pretrain", "pretrain")


def _sasrec_runs(settings, dataset, seeds: list[int], eval_count: int) -> tuple[list, list]:
    """SASRec trained to early stopping per seed, tested on the same first examples."""
    data = protocol_data(dataset)
    _, runs = run_variant(settings, data, "sasrec", Variant("base"), seeds)
    test = data.test.subset(range(min(eval_count or len(data.test), len(data.test))))
    batch_size = settings.recommender.eval_batch_size
    metrics = [sequential_evaluate(run.model, test, batch_size) for run in runs]
    details = [
        {
            "seed": run.seed,
            "best_epoch": run.fit.best_epoch,
            "epochs_run": run.fit.epochs_run,
            "train_seconds": round(run.fit.seconds, 1),
        }
        for run in runs
    ]
    return metrics, details


async def _latency(settings, folder: Path, histories: list[list[int]], requests: int) -> dict:
    """p50/p95 milliseconds and requests per second at concurrency 1 and 8."""
    import grpc

    from serving.genrec import GenRecServicer
    from serving.server import GENREC, start_server
    from streamrec.registry import ModelRegistry
    from streamrec.v1 import genrec_pb2, genrec_pb2_grpc

    ModelRegistry.from_settings(settings).add("genrec", folder)  # the server starts after
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
                figures[f"concurrency_{concurrency}"] = {
                    "requests": len(timings),
                    "p50_ms": round(1000 * percentile(timings, 50), 1),
                    "p95_ms": round(1000 * percentile(timings, 95), 1),
                    "requests_per_s": round(len(timings) / wall, 2),
                }
    finally:
        await server.stop(None)
    return figures


def _step_time_rows(dataset_name: str, dataset, chosen, steps: int, seed: int) -> list[dict]:
    """Median seconds of a fine-tuning step (encode, forward, backward, AdamW) per ID
    writing and attention dropout: what two-digit pieces and no attention dropout buy."""
    examples = next_item_examples(dataset.splits["train"], chosen.max_history)
    rows = []
    for piece_digits, attention_dropout in ((1, 0.1), (1, 0.0), (2, 0.1), (2, 0.0)):
        shape = chosen.model_copy(
            update={"piece_digits": piece_digits, "attention_dropout": attention_dropout}
        )
        torch.manual_seed(seed)
        model = GenRec.from_settings(shape, dataset.num_items + 1, dataset.num_users + 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=shape.learning_rate)
        rng = random.Random(seed)
        model.train()
        timings = []
        for _ in range(steps + 2):  # the first two warm the allocator up
            sample = rng.sample(examples, shape.batch_size)
            began = time.perf_counter()
            batch = model.encode([r.user for r in sample], [list(r.history) for r in sample])
            loss = model.loss(batch, [r.target for r in sample])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            timings.append(time.perf_counter() - began)
        rows.append(
            {
                "dataset": dataset_name,
                "model": "genrec",
                "variant": f"step_time/pieces{piece_digits}/attention_dropout{attention_dropout:g}",
                "seeds": [seed],
                "metrics": {
                    "median_step_seconds": round(statistics.median(timings[2:]), 4),
                    "encoder_tokens": int(batch.input_ids.shape[1]),
                },
                "note": f"{steps} steps of batch {shape.batch_size}, torch threads "
                f"{torch.get_num_threads()}, CPU",
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    options = parser("genrec", __doc__, dataset=True, threads=True)
    options.add_argument("--seeds", type=int, nargs="+", help="Default: genrec.seed.")
    options.add_argument(
        "--variants",
        nargs="+",
        default=[*GENREC_VARIANTS, "sasrec"],
        choices=[*GENREC_VARIANTS, "sasrec", "step_time"],
        help="step_time: the median training step per ID writing and attention dropout.",
    )
    options.add_argument("--timed-steps", type=int, default=20, help="Steps step_time times.")
    options.add_argument("--max-steps", type=int, help="Optimizer steps per phase (cap).")
    options.add_argument("--pretrain-epochs", type=int)
    options.add_argument("--finetune-epochs", type=int)
    options.add_argument("--max-history", type=int)
    options.add_argument("--max-eval", type=int, default=0, help="Test examples (0: all).")
    options.add_argument("--latency-requests", type=int, default=100)
    args = options.parse_args(argv)
    log_progress()
    use_threads(args.threads)

    settings = get_settings()
    seeds = args.seeds or [settings.genrec.seed]
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
    test, masked = evaluation_examples(dataset, "test", chosen.max_history)
    evaluated = f"test examples {chosen.max_eval_examples or len(test)} of {len(test)}"
    knobs = (
        f"d_model {chosen.d_model}, {chosen.encoder_layers}+{chosen.decoder_layers} layers, "
        f"history {chosen.max_history}, ID pieces of {chosen.piece_digits} digits, "
        f"dropout {chosen.dropout:g}, "
        f"epochs {chosen.pretrain_epochs} pretrain / {chosen.finetune_epochs} fine-tune, "
        f"step cap {chosen.max_steps or 'none'}"
        f"{' (a capped run, not the full schedule)' if chosen.max_steps else ''}, "
        f"{evaluated}, beam {chosen.beam_size}, torch threads {torch.get_num_threads()}"
    )
    rows = []
    if "step_time" in args.variants:
        rows += _step_time_rows(args.dataset, dataset, chosen, args.timed_steps, seeds[0])

    def add_row(model_name: str, variant: str, runs: list[dict], details: list[dict], note):
        rows.append(
            evaluation_row(args.dataset, model_name, variant, seeds, runs, note, runs=details)
        )

    last_model = None
    for variant in [v for v in GENREC_VARIANTS if v in args.variants]:
        runs, details = [], []
        for seed in seeds:
            started = time.perf_counter()
            model, summary = train_genrec(dataset, chosen, variant == "pretrain", seed)
            summary["train_seconds"] = round(time.perf_counter() - started, 1)
            metrics = evaluate(model, test, chosen, chosen.default_k, masked)
            metrics.pop("examples")
            runs.append(metrics)
            details.append(summary)
            print(variant, seed, json.dumps(metrics), file=sys.stderr, flush=True)
            last_model = model
        add_row("genrec", variant, runs, details, knobs)
    if "sasrec" in args.variants:
        runs, details = _sasrec_runs(settings, dataset, seeds, chosen.max_eval_examples)
        note = f"SASRec as bench/accuracy.py trains it (early stopping), {evaluated}"
        add_row("sasrec", "base", runs, details, note)
        print("sasrec", json.dumps(rows[-1]["metrics"]), file=sys.stderr, flush=True)

    if last_model is not None:
        rows.append(_serving_row(args, settings, chosen, dataset, last_model, test, seeds, knobs))
    write_result(args.json, rows)
    print(json.dumps(rows, indent=2))


def _serving_row(args, settings, chosen, dataset, model, test, seeds, knobs) -> dict:
    """GenRecService latency with the last trained model, histories in the request."""
    with tempfile.TemporaryDirectory() as scratch:
        item_ids, user_ids = item_and_user_ids(dataset)
        folder = model.save_pretrained(Path(scratch) / "genrec", item_ids, user_ids)
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
    return {
        "dataset": args.dataset,
        "model": "genrec",
        "variant": "serving",
        "seeds": seeds[-1:],
        "metrics": latency,
        "note": f"GenRecService over loopback gRPC, k={chosen.default_k}, the last model "
        f"trained, histories from the request, CPU; {knobs}",
    }


if __name__ == "__main__":
    main()
