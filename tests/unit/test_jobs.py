"""Job runs without services: run ids, lost runs, durations, the recorder's counts."""

import time

import pytest

from streamrec.jobs import LOST, RUNNING, SUCCEEDED, JobRecorder, JobRun, _as_run, new_run_id
from streamrec.settings import Settings


def _row(status: str, updated_s: float, started: int = 1000, finished: int = 1060) -> tuple:
    return (
        "r1",
        "knowledge",
        status,
        started,
        finished,
        5,
        1,
        2,
        0.5,
        "llm",
        "",
        int(updated_s * 1000),
    )


def test_run_ids_name_the_kind_and_sort_by_start_time():
    first = new_run_id("knowledge")
    time.sleep(1.1)
    second = new_run_id("knowledge")
    assert first.startswith("knowledge-") and second.startswith("knowledge-")
    assert first != second
    assert first[:-7] < second[:-7]


def test_a_running_row_without_recent_heartbeat_is_reported_lost():
    fresh = _as_run(_row(RUNNING, time.time()), lost_after_s=600)
    stale = _as_run(_row(RUNNING, time.time() - 601), lost_after_s=600)
    finished_long_ago = _as_run(_row(SUCCEEDED, time.time() - 10_000), lost_after_s=600)
    assert fresh.status == RUNNING
    assert stale.status == LOST
    assert finished_long_ago.status == SUCCEEDED


def test_duration_of_a_finished_run_and_its_dict():
    run = JobRun(*_row(SUCCEEDED, time.time()))
    assert run.duration_s == 60
    assert run.as_dict()["duration_s"] == 60
    assert run.as_dict()["items_ok"] == 5


def test_counts_add_up_and_a_kind_is_required():
    with pytest.raises(ValueError, match="kind"):
        JobRecorder(Settings(), "")
    recorder = JobRecorder(Settings(), "knowledge")  # not entered: no database needed
    recorder._started = time.time() - 2
    recorder.progress(ok=3)
    recorder.progress(ok=1, failed=2, skipped=4)
    assert (recorder.ok, recorder.failed, recorder.skipped) == (4, 2, 4)
    assert 1.0 < recorder.items_per_s <= 2.0


def test_scheduler_runs_knowledge_daily_at_the_configured_utc_time_and_alignment_every_n_hours():
    from datetime import UTC, datetime, timedelta

    from workers.scheduler import build_scheduler, scheduled_jobs

    settings = Settings()
    settings.ops.knowledge_cron = "15 3 * * *"
    settings.ops.alignment_interval_h = 6
    now = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    jobs = {job.name: job for job in scheduled_jobs(settings, alignment=True)}
    assert jobs["knowledge"].command == ("worker", "knowledge", "--once")
    assert jobs["knowledge"].trigger.get_next_fire_time(None, now) == datetime(
        2026, 11, 24, 3, 15, tzinfo=UTC
    )
    alignment = jobs["alignment"].trigger
    first = alignment.get_next_fire_time(None, now)
    assert alignment.get_next_fire_time(first, first) - first == timedelta(hours=6)
    assert [job.name for job in scheduled_jobs(settings, alignment=False)] == ["knowledge"]
    scheduled = build_scheduler(list(jobs.values()))
    added = {job.id: job for job in scheduled.get_jobs()}
    assert set(added) == {"knowledge", "alignment"}
    assert all(job.max_instances == 1 and job.coalesce for job in added.values())


def test_a_bad_cron_expression_is_refused():
    from workers.scheduler import scheduled_jobs

    settings = Settings()
    settings.ops.knowledge_cron = "every day"
    with pytest.raises(ValueError):
        scheduled_jobs(settings, alignment=False)


def test_launch_runs_the_cli_command_and_counts_its_outcome():
    from prometheus_client import REGISTRY

    from workers.scheduler import launch

    def launches(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "streamrec_scheduler_launches_total", {"job": "probe", "outcome": outcome}
            )
            or 0
        )

    assert launch("probe", ("jobs", "--help")) == 0
    assert launch("probe", ("jobs", "no-such-command")) != 0
    assert (launches("succeeded"), launches("failed")) == (1, 1)
