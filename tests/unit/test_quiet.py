"""A normal command prints no warnings: library loggers sit at WARNING unless --verbose.

Each check runs a fresh interpreter, as a user's command does (configuring logging
inside pytest would replace its capture handlers).
"""

from __future__ import annotations

import os
import subprocess
import sys

NOISE = ("WARNING", "ERROR", "Traceback", "Warning:")

# faiss's loader logs which build it loads at INFO on import: the library noise at hand.
IMPORT_FAISS = "from streamrec.logs import configure; configure({verbose}); import faiss"


def run(args: list[str], tmp_path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "STREAMREC_VERBOSE"}
    environment.update(STREAMREC_DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environment, timeout=120
    )


def noisy_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(word in line for word in NOISE)]


def test_a_real_command_prints_no_warning(tmp_path):
    result = run(["-m", "streamrec.cli", "services", "status"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"kafka"' in result.stdout
    assert not noisy_lines(result.stderr + result.stdout)


def test_library_loggers_are_quiet_unless_verbose(tmp_path):
    quiet = run(["-c", IMPORT_FAISS.format(verbose=False)], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "faiss" not in quiet.stderr
    verbose = run(["-c", IMPORT_FAISS.format(verbose=True)], tmp_path)
    assert "INFO faiss.loader: Loading faiss" in verbose.stderr


def test_child_processes_inherit_verbose(tmp_path):
    """`streamrec -v up` runs its planes as children of the CLI: they must be verbose too."""
    parent = (
        "import subprocess, sys; from streamrec.logs import configure; configure(True); "
        f"subprocess.run([sys.executable, '-c', {IMPORT_FAISS.format(verbose=False)!r}])"
    )
    child = run(["-c", parent], tmp_path)
    assert "INFO faiss.loader: Loading faiss" in child.stderr


def test_ours_log_at_info_by_default(tmp_path):
    script = (
        "import logging; from streamrec.logs import configure; configure(False); "
        "logging.getLogger('streamrec.probe').info('ours'); "
        "logging.getLogger('kafka.probe').info('theirs'); "
        "logging.getLogger('kafka.probe').warning('theirs, a warning')"
    )
    result = run(["-c", script], tmp_path)
    assert "INFO streamrec.probe: ours" in result.stderr
    assert "theirs\n" not in result.stderr
    assert "WARNING kafka.probe: theirs, a warning" in result.stderr


def test_routine_retry_warnings_are_dropped_and_others_kept(tmp_path):
    script = (
        "import logging, sys; from streamrec.logs import configure; "
        "configure(sys.argv[1] == 'verbose'); log = logging.getLogger('kafka.cluster'); "
        "log.warning('No node available for metadata refresh - backoff/retry'); "
        "log.error('Metadata refresh: failed Cancelled'); "
        "log.warning('Metadata refresh: failed for real')"
    )
    quiet = run(["-c", script, "quiet"], tmp_path)
    assert "No node available" not in quiet.stderr
    assert "Cancelled" not in quiet.stderr
    assert "failed for real" in quiet.stderr
    verbose = run(["-c", script, "verbose"], tmp_path)
    assert "No node available" in verbose.stderr
