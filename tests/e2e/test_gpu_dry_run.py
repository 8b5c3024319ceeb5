"""bench/gpu.sh --dry-run: every GPU part starts, runs a step and writes JSON that parses,
so the real run on a GPU cannot fail on a typo or a missing file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import problems

REPO = Path(__file__).resolve().parents[2]


def _result(folder: Path, name: str):
    record = json.loads((folder / f"{name}.json").read_text())
    assert not problems(record), (name, problems(record))
    return record["result"]


@pytest.mark.timeout(1600)  # four benches: minutes on a busy shared CPU
def test_gpu_script_dry_run_writes_every_part(tmp_path):
    out = tmp_path / "gpu"
    kept = sorted((REPO / "bench" / "results").rglob("*"))
    environment = {**os.environ, "PYTHON": sys.executable}
    environment.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), "--dry-run", "--out", str(out)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    logs = "".join(path.read_text()[-2000:] for path in sorted(out.glob("logs/*.log")))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:] + logs
    assert "GPU found" in done.stdout or "no GPU found" in done.stdout
    assert "failed: none" in done.stdout

    knowledge = _result(out, "knowledge")
    assert set(knowledge["cpu"]["by_batch"]) == {"1", "2"} and knowledge["gpu"] is None
    assert knowledge["cpu"]["best_items_per_s"] > 0

    alignment = _result(out, "alignment")
    assert alignment["complete"] is True
    variants = {row["variant"] for row in alignment["rows"]}
    wanted = {"base", "na_llm", "seralm", "a_llm_na_rec", "na_llm_a_rec", "slow_refresh"}
    assert wanted | {"seralm[target_item]", "speed"} == variants
    assert all(len(curve["kl"]) == 2 for curve in alignment["curves"].values())
    assert alignment["texts"] and all(isinstance(t, str) for t in alignment["texts"][0]["texts"])
    speed = next(row for row in alignment["rows"] if row["variant"] == "speed")
    assert speed["async_iters_per_s"] > 0 and speed["sync_iters_per_s"] > 0

    recsysllm = _result(out, "recsysllm")
    ranked = {(row["model"], row["variant"]): row["metrics"] for row in recsysllm}
    for model in ("recsysllm", "sft"):
        assert ranked[(model, "candidates/seen")]["users"] == 2
        assert ranked[(model, "next_item/seen")]["users"] == 1
        assert 0 <= ranked[(model, "candidates/seen")]["hr@1_se"] <= 0.5
    assert ranked[("baseline", "candidates/random")]["hr@1"] == 0.05

    faiss = _result(out, "faiss_gpu")
    flat = next(row for row in faiss["rows"] if row["kind"] == "flat" and row["device"] == "cpu")
    assert flat["recall@10"] == 1.0 and flat["items"] == 10_000
    assert {row["kind"] for row in faiss["rows"]} == {"flat", "ivf"}

    summary = _result(out, "summary")
    assert summary["failed"] == []
    assert all(summary[name]["exit"] == 0 for name in ("knowledge", "alignment", "recsysllm"))
    assert sorted((REPO / "bench" / "results").rglob("*")) == kept  # nothing written there
