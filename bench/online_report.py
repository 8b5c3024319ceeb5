"""The figures of `bench/online.py` from what its run recorded: per-event ranks of each
variant -> NDCG@10 / HR@10 overall, per simulated week and on cold items, the bootstrap
interval over users of each variant's gain on *static*, and the freshness joins (event ->
first model version whose saved offsets include it). Pure: no services, so it is tested
on its own (tests/unit/test_online_report.py)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.common import percentile
from models.metrics import hit_rate, ndcg

CUTOFF = 10
WEEK_S = 7 * 86400


@dataclass
class Asked:
    """The replayed events in the order asked, and each variant's 1-based rank of the
    event's item in the top-10 it answered (inf: not in it)."""

    users: np.ndarray
    weeks: np.ndarray  # simulated week of each event, from 0 at the split
    cold: np.ndarray  # bool: the item first appeared after the split
    ranks: dict[str, np.ndarray]
    cold_start: dict[str, np.ndarray]  # bool: the server answered popular items


def figures(ranks: np.ndarray) -> dict:
    return {
        f"ndcg@{CUTOFF}": ndcg(ranks, CUTOFF),
        f"hr@{CUTOFF}": hit_rate(ranks, CUTOFF),
        "events": len(ranks),
    }


def variant_figures(asked: Asked, variant: str) -> dict:
    """Overall, cold-item and per-week figures of one variant."""
    ranks = asked.ranks[variant]
    overall, cold = figures(ranks), figures(ranks[asked.cold])
    hits_from_popular = int(((ranks <= CUTOFF) & asked.cold & asked.cold_start[variant]).sum())
    return {
        f"ndcg@{CUTOFF}": overall[f"ndcg@{CUTOFF}"],
        f"hr@{CUTOFF}": overall[f"hr@{CUTOFF}"],
        f"cold_ndcg@{CUTOFF}": cold[f"ndcg@{CUTOFF}"],
        f"cold_hr@{CUTOFF}": cold[f"hr@{CUTOFF}"],
        "cold_hits": int(((ranks <= CUTOFF) & asked.cold).sum()),
        "cold_hits_from_popular_answers": hits_from_popular,
        "popular_answer_share": float(asked.cold_start[variant].mean()) if len(ranks) else 0.0,
        "per_week": [
            {"week": int(week), **figures(ranks[asked.weeks == week])}
            for week in np.unique(asked.weeks)
        ],
    }


def user_sums(asked: Asked, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Per user (in `np.unique` order): the sum of NDCG@10 gains over their events, and
    their number of events; the bootstrap resamples these."""
    users, inverse, counts = np.unique(asked.users, return_inverse=True, return_counts=True)
    ranks = asked.ranks[variant]
    sums = np.array([ndcg(ranks[inverse == u], CUTOFF) * n for u, n in enumerate(counts)])
    return sums, counts


def bootstrap_gain(
    asked: Asked, variant: str, baseline: str = "static", samples: int = 2000, seed: int = 0
) -> dict:
    """`variant`'s NDCG@10 relative to `baseline`'s (gain = ratio - 1) and absolute
    difference, with 95 % percentile intervals from resampling users with replacement
    (a user's events stay together: they are not independent)."""
    mine, counts = user_sums(asked, variant)
    theirs, _ = user_sums(asked, baseline)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(samples, len(counts)))
    events = counts[picks].sum(axis=1)
    ours, base = mine[picks].sum(axis=1) / events, theirs[picks].sum(axis=1) / events
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = ours / base - 1
    point_ours, point_base = mine.sum() / counts.sum(), theirs.sum() / counts.sum()
    return {
        f"ndcg@{CUTOFF}_gain": float(point_ours / point_base - 1) if point_base else None,
        "ci95": [float(np.nanpercentile(gains, 2.5)), float(np.nanpercentile(gains, 97.5))],
        f"ndcg@{CUTOFF}_difference": float(point_ours - point_base),
        "ci95_difference": [
            float(np.percentile(ours - base, 2.5)),
            float(np.percentile(ours - base, 97.5)),
        ],
        "users": int(len(counts)),
        "bootstrap_samples": samples,
    }


def first_version_times(
    positions: Sequence[tuple[int, int]], versions: Sequence[tuple[int, dict[int, int]]]
) -> list[int | None]:
    """For each (partition, offset) of a training example, the creation time (ms) of the
    first version whose saved offsets (next offset per partition) pass it; None when none
    does. `versions`: (created ms, offsets) oldest first."""
    times = []
    by_partition: dict[int, tuple[list[int], list[int]]] = {}
    for created, offsets in versions:
        for partition, offset in offsets.items():
            seen, made = by_partition.setdefault(partition, ([], []))
            # Offsets only grow; a version behind the best so far adds nothing.
            if not seen or offset > seen[-1]:
                seen.append(offset)
                made.append(created)
    for partition, offset in positions:
        seen, made = by_partition.get(partition, ([], []))
        index = bisect.bisect_right(seen, offset)  # first saved offset > offset
        times.append(made[index] if index < len(seen) else None)
    return times


def latency_summary(seconds: Sequence[float], missing: int = 0) -> dict:
    values = list(seconds)
    return {
        "p50_s": round(percentile(values, 50), 3),
        "p99_s": round(percentile(values, 99), 3),
        "max_s": round(max(values), 3) if values else None,
        "count": len(values),
        "missing": missing,
    }


def check_targets(report: dict) -> list[dict]:
    """Issue 16's targets, each with the figure that decides it and by how much it is met
    or missed (`margin`: positive when met)."""
    v, gain = report["variants"], report["online_vs_static"]
    ndcg_key, cold_key = f"ndcg@{CUTOFF}", f"cold_ndcg@{CUTOFF}"
    fresh = report["freshness"]
    retrain_seconds = v["daily_retrain"]["train_seconds"] or 0.0
    static_model_cold_hits = (
        v["static"]["cold_hits"] - v["static"]["cold_hits_from_popular_answers"]
    )

    def row(name: str, figure, threshold, met: bool, margin) -> dict:
        return {
            "target": name,
            "figure": figure,
            "threshold": threshold,
            "met": bool(met),
            "margin": margin,
        }

    relative_to_retrain = v["online"][ndcg_key] / v["daily_retrain"][ndcg_key] - 1
    compute_share = v["online"]["train_seconds"] / retrain_seconds if retrain_seconds else None
    return [
        row(
            "online NDCG@10 >= 5 % above static",
            gain[f"{ndcg_key}_gain"],
            0.05,
            gain[f"{ndcg_key}_gain"] >= 0.05,
            gain[f"{ndcg_key}_gain"] - 0.05,
        ),
        row(
            "its 95 % interval above zero",
            gain["ci95"],
            0.0,
            gain["ci95"][0] > 0,
            gain["ci95"][0],
        ),
        row(
            "online NDCG@10 no more than 1 % below daily_retrain",
            relative_to_retrain,
            -0.01,
            relative_to_retrain >= -0.01,
            relative_to_retrain + 0.01,
        ),
        row(
            "online training compute under a quarter of daily_retrain's",
            compute_share,
            0.25,
            compute_share is not None and compute_share < 0.25,
            None if compute_share is None else 0.25 - compute_share,
        ),
        row(
            "static: no cold-item hits from its model",
            static_model_cold_hits,
            0,
            static_model_cold_hits == 0,
            -static_model_cold_hits,
        ),
        row(
            "online_knowledge above online on cold items",
            [v["online_knowledge"][cold_key], v["online"][cold_key]],
            None,
            v["online_knowledge"][cold_key] > v["online"][cold_key],
            v["online_knowledge"][cold_key] - v["online"][cold_key],
        ),
        row(
            "event -> history p99 <= 1 s",
            fresh["history_p99_s"],
            1.0,
            fresh["history_p99_s"] <= 1.0,
            1.0 - fresh["history_p99_s"],
        ),
        row(
            "event -> model p99 <= 60 s",
            fresh["model_p99_s"],
            60.0,
            fresh["model_p99_s"] <= 60.0,
            60.0 - fresh["model_p99_s"],
        ),
        row(
            "trainer >= 2,000 examples/s on one core",
            report["trainer_examples_per_s"],
            2000.0,
            report["trainer_examples_per_s"] >= 2000.0,
            report["trainer_examples_per_s"] - 2000.0,
        ),
    ]
