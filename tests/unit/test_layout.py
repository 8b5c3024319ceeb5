"""The import rules of ARCHITECTURE.md: the planes meet only through Kafka,
ClickHouse and the model registry, and models/ stays free of the kernel."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = {"streamrec", "models", "streams", "workers", "serving"}

# package -> the project packages its modules may import (itself always allowed)
ALLOWED = {
    "models": set(),
    "streams": {"streamrec"},
    "workers": {"streamrec", "models"},
    "serving": {"streamrec", "models"},
    "streamrec": {"models"},
}
# The kernel may import models only in the registry; the CLI is the composition root.
KERNEL_MODELS_IMPORTERS = {"streamrec/registry.py"}
COMPOSITION_ROOT = "streamrec/cli.py"


def imported(node: ast.AST) -> list[str]:
    """The modules an (absolute) import statement names; none for any other node."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def project_imports(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        found.update(name.split(".")[0] for name in imported(node))
    return found & PROJECT_PACKAGES


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_the_layout_allows(package):
    broken = []
    for path in modules(package):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith((COMPOSITION_ROOT, "streamrec/v1/")):
            continue
        allowed = ALLOWED[package] | {package}
        if package == "streamrec" and relative not in KERNEL_MODELS_IMPORTERS:
            allowed = {package}
        extra = project_imports(path) - allowed
        if extra:
            broken.append(f"{relative} imports {sorted(extra)}")
    assert not broken, "\n".join(broken)


def test_the_cli_loads_no_plane_code_until_a_command_runs():
    """`streamrec --help` imports the planes' command modules and nothing else of them:
    each command imports the plane code it runs."""
    probe = (
        "import sys, streamrec.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'streams', 'workers', 'serving', 'models'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    plane_modules = ast.literal_eval(loaded)
    assert plane_modules, "the probe saw no command module: is it looking at the right CLI?"
    # A plane's package (its docstring) and its command modules; none of its code.
    assert [m for m in plane_modules if m.split(".")[1:2] not in ([], ["cli"])] == []


def path_hacks_and_test_imports(path: Path) -> list[str]:
    """Where a module edits `sys.path` or imports from `tests`, by line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "path":
            if isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append(f"{node.lineno}: sys.path")
        tests = [name for name in imported(node) if name.split(".")[0] == "tests"]
        found += [f"{node.lineno}: imports {name}" for name in tests]
    return sorted(found, key=lambda place: int(place.split(":")[0]))


def test_the_benches_run_as_a_package():
    """`python -m bench.<name>` from the repository root: no bench or test touches sys.path,
    and no bench imports the tests (the launcher they share is in the kernel)."""
    broken = []
    for path in modules("bench") + modules("tests"):
        relative = path.relative_to(ROOT).as_posix()
        for place in path_hacks_and_test_imports(path):
            if relative.startswith("bench/") or "sys.path" in place:
                broken.append(f"{relative}:{place}")
    assert not broken, "\n".join(broken)


def test_the_rule_checker_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "agent.py"
    module.write_text("import os\nfrom serving.server import build\nimport workers.trainer\n")
    assert project_imports(module) == {"serving", "workers"}
    module.write_text("import os\n\ndef command():\n    from serving.server import build\n")
    assert project_imports(module, top_level_only=True) == set()
    module.write_text(
        "import sys\nsys.path.insert(0, '.')\nfrom tests.integration import helpers\n"
    )
    assert path_hacks_and_test_imports(module) == ["2: sys.path", "3: imports tests.integration"]
