"""The alert rules in deploy/monitoring/: valid for Prometheus (`promtool check rules`),
right on their unit tests (`promtool test rules`), each rule tested, each metric they
read exported by the code, and their thresholds the ones the status page draws."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from streamrec.settings_ops import OpsSettings

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULE_FILES = sorted(MONITORING.glob("*.rules.yml"))
RULE_TESTS = MONITORING / "tests" / "rules.test.yml"
# What ops asked to be alerted on (docs/ops.md lists them with their thresholds).
REQUIRED = {
    "KnowledgeJobStale",
    "KnowledgeCoverageLow",
    "JobFailureRateHigh",
    "TrainerStalled",
    "ConsumerLagGrowing",
    "DeadLetterRateHigh",
    "ServingLatencyHigh",
    "ServingErrors",
}
METRIC = re.compile(r"\bstreamrec_[a-z0-9_]+")


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: ./run test installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def rules() -> dict[str, dict]:
    found = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found[rule["alert"]] = rule
    return found


def test_promtool_accepts_every_rule_file():
    checked = promtool("check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") == len(RULE_FILES)


def test_the_rules_pass_their_promtool_unit_tests():
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_has_a_unit_test_that_sees_it_fire():
    spec = yaml.safe_load(RULE_TESTS.read_text())
    assert {(RULE_TESTS.parent / f).resolve() for f in spec["rule_files"]} == set(RULE_FILES)
    firing = {
        case["alertname"]
        for test in spec["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(rules()) == firing
    assert REQUIRED <= set(rules())


def exported_metrics() -> set[str]:
    """Every streamrec_* name the code defines (prometheus_client objects and the status
    page's collectors), with the suffixes Prometheus adds."""
    names = set()
    for package in ("streamrec", "streams", "workers", "serving"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r'"(streamrec_[a-z0-9_]+)', path.read_text()))
    suffixed = {name + suffix for name in names for suffix in ("_total", "_bucket", "_count")}
    return names | suffixed


def test_the_rules_read_only_metrics_the_code_exports():
    exported = exported_metrics()
    for name, rule in rules().items():
        unknown = set(METRIC.findall(rule["expr"])) - exported
        assert not unknown, f"{name} reads {sorted(unknown)}, which nothing exports"


def test_the_thresholds_are_the_ones_the_status_page_draws():
    ops = OpsSettings()
    found = rules()
    assert f"> {ops.success_alert_h['knowledge']:g} * 3600" in found["KnowledgeJobStale"]["expr"]
    assert f"> {ops.success_alert_h['trainer']:g} * 3600" in found["TrainerStalled"]["expr"]
    assert f"< {ops.coverage_alert_ratio:g}" in found["KnowledgeCoverageLow"]["expr"]
    assert found["KnowledgeCoverageLow"]["for"] == "1h"


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in MONITORING.glob("*-dashboard.json")}


def test_grafana_has_one_dashboard_per_plane_reading_only_exported_metrics():
    boards = {board["uid"]: board for board in dashboards().values()}
    assert set(boards) == {"streamrec-streams", "streamrec-jobs", "streamrec-serving"}
    exported = exported_metrics()
    for uid, board in boards.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{uid}: panel ids repeat"
        for panel in board["panels"]:
            for target in panel["targets"]:
                unknown = set(METRIC.findall(target["expr"])) - exported
                assert not unknown, f"{uid} / {panel['title']} reads {sorted(unknown)}"


def test_kubernetes_monitoring_ships_every_rule_file_and_dashboard():
    kustomization = yaml.safe_load(
        (ROOT / "deploy" / "kubernetes" / "monitoring" / "kustomization.yaml").read_text()
    )
    shipped = {
        Path(entry).name
        for generator in kustomization["configMapGenerator"]
        if generator["name"] in {"streamrec-alerts", "streamrec-dashboards"}
        for entry in generator["files"]
    }
    assert shipped == {path.name for path in RULE_FILES} | set(dashboards())
