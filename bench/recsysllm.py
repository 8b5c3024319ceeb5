"""RecSysLLM against plain supervised fine-tuning of the same LLM with the same LoRA.

    python -m bench.recsysllm --json bench/out/recsysllm.json [--users 100 --steps 60] \
        [--eval-users 10] [--rank-users 200]

RecSysLLM: entity-aware masked behaviour texts beside the tasks, intra-entity
positions, trie-constrained decoding. SFT (the paper's ChatGLM+SFT row, on our
LLM): the task examples only, no intra-entity positions, next items decoded as
free text (one item; its validity counted). Both on the same users, steps and
seed; rows in the project's evaluation JSON format, plus a random-ranking and a
global-mean-rating baseline. Every task is evaluated on `--eval-users`; candidate
ranking (HR@1 among 20 candidates; random: 0.05), which needs no decoding, on
`--rank-users` held-out users (the first `--eval-users` of them included), each row
with its users and the binomial standard error of its HR@1.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from bench.common import evaluation_row, parser, use_threads
from bench.results import write_result
from models.metrics import ranking_metrics
from streamrec.datasets import load_dataset
from streamrec.settings import Settings
from workers import recsysllm_training as training

# Each model: the RecSysLLMConfig parts switched off, and whether next items are decoded
# through the trie.
MODELS = {
    "recsysllm": ({}, True),
    "sft": ({"intra_positions": False, "masked_texts": False}, False),
}


def rows_for(model: str, dataset: str, seed: int, metrics: dict, note: str) -> list[dict]:
    return [
        evaluation_row(dataset, model, task, [seed], [values], note)
        for task, values in sorted(metrics.items())
    ]


def _standard_error(rate: float, users: int) -> float:
    """The binomial standard error of a hit rate over `users`: two rows whose HR@1 differ
    by less than about twice it are not told apart."""
    return math.sqrt(rate * (1 - rate) / users) if users else float("nan")


def main() -> None:
    options = parser("recsysllm", __doc__, dataset=True, threads=True)
    options.add_argument("--users", type=int, default=100, help="training users")
    options.add_argument("--steps", type=int, default=60)
    options.add_argument("--eval-users", type=int, default=10, help="users of every task")
    options.add_argument("--rank-users", type=int, default=0, help="users of candidate ranking")
    options.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=MODELS, help="one may run apart"
    )
    args = options.parse_args()
    use_threads(args.threads)
    settings = Settings()
    settings = settings.model_copy(
        update={
            "recsysllm": settings.recsysllm.model_copy(
                update={"train_users": args.users, "steps": args.steps}
            )
        }
    )
    config = settings.recsysllm
    data = training.dataset_data(load_dataset(args.dataset, settings))
    users = training.sample_users(data, args.users, config.seed)
    rank_users = max(args.rank_users, args.eval_users)
    ranked = training.sample_users(data, rank_users, config.seed + 7)
    held_out = ranked[: args.eval_users]
    note = (
        f"{args.users} training users, {args.steps} steps of batch "
        f"{config.batch_size}, {config.prompt_items} history items per prompt, "
        f"{args.eval_users} evaluation users ({len(ranked)} for candidate ranking), one seed"
    )
    rows, seconds = [], {}  # seconds: training plus evaluation, per model
    for name in args.models:
        variant, constrained = MODELS[name]
        started = time.perf_counter()
        artifact = training.train_recsysllm(settings, data, users, **variant)
        metrics = training.evaluate(settings, artifact, data, held_out, constrained)
        if len(ranked) > len(held_out):
            metrics.update(
                training.evaluate(settings, artifact, data, ranked, tasks=("candidates",))
            )
        for values in metrics.values():
            if "hr@1" in values:
                values["hr@1_se"] = _standard_error(values["hr@1"], values["users"])
        seconds[name] = round(time.perf_counter() - started, 1)
        for row in rows_for(name, args.dataset, config.seed, metrics, note):
            rows.append({**row, "seconds": seconds[name]})
        write_result(args.json, rows)  # a run cut short keeps the models it finished
    ratings = [r for u in users for r in data.histories[u].ratings[:-2] if r is not None]
    mean = float(np.mean(ratings))
    errors = np.array([data.histories[u].ratings[-1] - mean for u in held_out])
    baseline = {
        "rating/global_mean": {
            "rmse": float(np.sqrt((errors**2).mean())),
            "mae": float(np.abs(errors).mean()),
        },
        # A random order puts the target at each position of the pool equally often.
        "candidates/random": {
            "hr@1": 1 / config.candidates,
            **ranking_metrics(range(1, config.candidates + 1)),
        },
    }
    rows += rows_for("baseline", args.dataset, config.seed, baseline, note)
    write_result(args.json, rows)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
