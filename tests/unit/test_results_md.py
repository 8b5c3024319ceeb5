"""bench/RESULTS.md is a view of bench/results/*.json, and every result says what made it."""

from __future__ import annotations

import json
import sys
import types

import pytest

from bench import results_md
from bench.results import command_line, committed, problems, write_result


def test_results_md_is_generated_from_the_committed_results():
    assert results_md.PAGE.read_text() == results_md.render(), (
        "bench/RESULTS.md is stale: run python -m bench.results_md"
    )


@pytest.mark.parametrize("path", committed(), ids=lambda p: p.name)
def test_every_committed_result_has_its_command_commit_date_and_machine(path):
    assert problems(json.loads(path.read_text())) == []


def test_write_result_records_provenance_and_the_page_shows_it(tmp_path):
    payload = [{"model": "sasrec", "variant": "base", "metrics": {"ndcg@10": 0.1032}}]
    path = write_result(tmp_path / "accuracy" / "run.json", payload, ["bench/accuracy.py", "-x"])
    record = json.loads(path.read_text())
    assert problems(record) == []
    assert record["result"] == payload
    assert record["command"] == "python bench/accuracy.py -x"
    assert record["machine"]["cores"] >= 1
    page = results_md.render(tmp_path)
    assert "## accuracy/run" in page
    assert "`python bench/accuracy.py -x`" in page
    assert "| sasrec | base | 0.1032 |" in page


@pytest.mark.parametrize("missing", ["command", "commit", "date", "machine"])
def test_a_result_without_provenance_is_refused(tmp_path, missing):
    path = write_result(tmp_path / "bench" / "run.json", {"items_per_s": 1.5})
    record = json.loads(path.read_text())
    del record[missing]
    path.write_text(json.dumps(record))
    assert problems(record)
    with pytest.raises(ValueError, match=f"no {missing}"):
        results_md.render(tmp_path)


def test_a_result_without_the_load_it_ran_under_is_refused():
    record = {"command": "python bench/x.py", "commit": "0" * 40, "date": "2025-01-01T00:00:00Z"}
    record |= {"machine": {"cores": 2}, "result": {"items_per_s": 1.5}}
    assert problems(record) == ["no machine.load_average_start", "no machine.load_average_end"]


def test_the_command_of_a_bench_run_as_a_module(monkeypatch):
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="bench.knowledge")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/anywhere/bench/knowledge.py", "--json", "out.json"])
    assert command_line() == "python -m bench.knowledge --json out.json"
