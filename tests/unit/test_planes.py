"""The plane processes of a running system: a real plane (the scheduler, which needs no
services) started in the background, found by its PID file, and stopped cleanly."""

from __future__ import annotations

import os

from streamrec.services.children import wait_for
from streamrec.services.planes import SCHEDULER, TRAINER, PlaneProcesses
from streamrec.services.process import pid_alive
from streamrec.settings import Settings


def test_a_plane_runs_detached_until_stopped_by_sigterm(tmp_path):
    planes = PlaneProcesses(Settings(data_dir=tmp_path))
    pid = planes.start(SCHEDULER)
    try:
        # Found again from its file alone, as `status` and `down` in another process do.
        assert PlaneProcesses(Settings(data_dir=tmp_path)).running() == {"scheduler": pid}
        assert os.getsid(pid) == pid  # its own session: it outlives the command that started it
        log = planes.log_file(SCHEDULER)
        wait_for(lambda: "knowledge: next run" in log.read_text(), 60, "the scheduler to run")
    finally:
        planes.stop(SCHEDULER)
    assert not pid_alive(pid)
    assert not planes.pid_file(SCHEDULER).exists()
    assert planes.running() == {}
    # It ended through its SIGTERM handler, not a SIGKILL.
    assert log.read_text().rstrip().endswith("stopped")


def test_a_stale_pid_file_never_signals_another_process(tmp_path):
    planes = PlaneProcesses(Settings(data_dir=tmp_path))
    planes.folder.mkdir(parents=True)
    # This test's own PID: alive, but not a trainer.
    planes.pid_file(TRAINER).write_text(f"{os.getpid()}\n")
    assert not planes.alive(TRAINER)
    assert planes.running() == {}
    planes.stop(TRAINER)  # we are still here
    assert not planes.pid_file(TRAINER).exists()


def test_status_lists_the_versions_a_server_refused(tmp_path):
    from streamrec.commands.system import _registry_summary
    from streamrec.registry import ModelRegistry

    settings = Settings(data_dir=tmp_path, registry={"root": str(tmp_path / "registry")})
    registry = ModelRegistry.from_settings(settings)
    family = settings.recommender.family
    registry.mark_failed(family, "v000003", "scores are not finite")
    summary = _registry_summary(settings)
    assert [(f["version"], f["reason"]) for f in summary["failed"]] == [
        ("v000003", "scores are not finite")
    ]
