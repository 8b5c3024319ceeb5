"""bench/gpu.sh's last step: every part's JSON read back, its figures against the targets.

    python -m bench.gpu_summary OUT NAME:EXIT:SECONDS ... [--dry-run]

Writes OUT/summary.json (the parts' exit codes and seconds, each JSON's state, the
figures) and prints it as lines. Exits 1 when a part's JSON is missing or does not
parse, and in a dry run also when a part failed or hit its cap.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.results import write_result

PARTS = ("knowledge", "alignment", "recsysllm", "faiss_gpu")


def _metric(rows: list[dict], name: str, **match) -> float | None:
    for row in rows:
        if all(row.get(key) == value for key, value in match.items()):
            return row.get("metrics", {}).get(name)
    return None


def knowledge(result: dict) -> dict:
    side = result.get("gpu") or result.get("cpu") or {}
    return {
        "device": "gpu" if result.get("gpu") else "cpu",
        "best_items_per_s": side.get("best_items_per_s"),
        "best_batch": side.get("best_batch"),
        "items_per_s_by_batch": {k: v["items_per_s"] for k, v in side.get("by_batch", {}).items()},
        "target": "at least 50 items/s on the GPU",
    }


def alignment(result: dict) -> dict:
    rows = result.get("rows", [])
    ndcg = {row["variant"]: row["metrics"]["ndcg@10"] for row in rows if "metrics" in row}
    speed = next((row for row in rows if row.get("variant") == "speed"), {})
    ratio = None
    if speed.get("sync_iters_per_s"):
        ratio = round(speed["async_iters_per_s"] / speed["sync_iters_per_s"], 2)
    order = None
    if {"base", "na_llm", "seralm"} <= set(ndcg):
        order = ndcg["seralm"] > ndcg["na_llm"] > ndcg["base"]
    return {
        "complete": result.get("complete"),
        "ndcg@10": ndcg,
        "seralm_above_na_llm_above_base": order,
        "async_over_sync": ratio,
        "iterations": {name: len(curve["mean_ratio"]) for name, curve in result["curves"].items()},
        "target": "seralm > na_llm > base on NDCG@10; async at least 1.5x sync",
    }


def recsysllm(result: list) -> dict:
    figures = {}
    for model in ("recsysllm", "sft"):
        for label in ("seen", "unseen"):
            row = next(
                (
                    r
                    for r in result
                    if r["model"] == model and r["variant"] == f"candidates/{label}"
                ),
                None,
            )
            if row:
                m = row["metrics"]
                figures[f"{model} candidates/{label}"] = {
                    "hr@1": m["hr@1"], "hr@1_se": m.get("hr@1_se"), "users": m["users"]
                }  # fmt: skip
        valid = _metric(result, "valid_item_rate", model=model, variant="next_item/unseen")
        figures[f"{model} next_item/unseen valid_item_rate"] = valid
    figures["random hr@1"] = _metric(result, "hr@1", model="baseline", variant="candidates/random")
    figures["target"] = "RecSysLLM's HR@1 above SFT's and above random (0.05); all items valid"
    return figures


def faiss_gpu(result: dict) -> dict:
    return {
        f"{row['kind']} {row['device']}": row.get("skipped")
        or {k: row[k] for k in ("batch_queries_per_s", "single_p50_ms", "recall@10")}
        for row in result.get("rows", [])
    }


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("out", type=Path)
    options.add_argument("parts", nargs="*", help="NAME:EXIT:SECONDS per part run")
    options.add_argument("--dry-run", action="store_true")
    args = options.parse_args(argv)
    runs = {}
    for entry in args.parts:
        name, code, seconds = entry.split(":")
        runs[name] = {"exit": int(code), "seconds": int(seconds), "cut_at_cap": code == "124"}
    summary, failed = {}, []
    for name in PARTS:
        path = args.out / f"{name}.json"
        state = runs.get(name, {"exit": None})
        try:
            result = json.loads(path.read_text())["result"]
            state["figures"] = globals()[name](result)
        except (OSError, ValueError, KeyError, TypeError) as error:
            state["error"] = f"{path}: {type(error).__name__}: {error}"
            failed.append(name)
        if args.dry_run and state.get("exit") != 0 and name not in failed:
            failed.append(name)
        summary[name] = state
    summary["failed"] = failed
    write_result(args.out / "summary.json", summary)
    print("== summary")
    for name in PARTS:
        state = summary[name]
        print(f"{name}: exit {state.get('exit')}, {state.get('seconds')}s")
        print("  " + json.dumps(state.get("figures", state.get("error"))))
    print("failed: " + (", ".join(failed) or "none"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
