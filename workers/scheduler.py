"""The job scheduler: the daily knowledge job and the periodic alignment job.

Each job runs as a child process of the `streamrec` CLI (the same command a
Kubernetes CronJob runs), so a job that crashes or leaks GPU memory never
takes the scheduler down, and each run records its own `job_runs` row.
APScheduler keeps one instance of a job at a time and runs a missed fire once
(coalesced) if the scheduler was down at that moment.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from datetime import UTC, timedelta

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import Counter

from streamrec.services.children import streamrec_command
from streamrec.settings import Settings

log = logging.getLogger(__name__)

LAUNCHES = Counter(
    "streamrec_scheduler_launches_total", "Jobs launched by the scheduler", ["job", "outcome"]
)
# A fire missed by less than this (scheduler restarting) still runs.
MISFIRE_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    # Arguments of the `streamrec` CLI that run the job once.
    command: tuple[str, ...]
    trigger: BaseTrigger


def scheduled_jobs(settings: Settings, alignment: bool) -> list[ScheduledJob]:
    """The knowledge job on `ops.knowledge_cron` (UTC), and alignment every N hours if asked."""
    jobs = [
        ScheduledJob(
            "knowledge",
            ("worker", "knowledge", "--once"),
            CronTrigger.from_crontab(settings.ops.knowledge_cron, timezone=UTC),
        )
    ]
    if alignment:
        jobs.append(
            ScheduledJob(
                "alignment",
                ("align",),
                IntervalTrigger(hours=settings.ops.alignment_interval_h, timezone=UTC),
            )
        )
    return jobs


def launch(job_name: str, command: tuple[str, ...]) -> int:
    """Run one job to its end as `python -m streamrec.cli COMMAND`; returns its exit code."""
    log.info("starting %s: streamrec %s", job_name, " ".join(command))
    code = subprocess.call(streamrec_command(*command))
    LAUNCHES.labels(job_name, "succeeded" if code == 0 else "failed").inc()
    if code == 0:
        log.info("%s finished", job_name)
    else:
        log.error("%s exited with code %d (its job_runs row has the error)", job_name, code)
    return code


def build_scheduler(jobs: list[ScheduledJob]) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone=UTC)
    for job in jobs:
        scheduler.add_job(
            launch,
            job.trigger,
            args=(job.name, job.command),
            id=job.name,
            name=job.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
        )
    return scheduler
