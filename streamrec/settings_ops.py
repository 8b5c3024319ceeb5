"""The ops settings: job runs, the scheduler, the status page, knowledge coverage and the
thresholds the page draws against.

Part of the one settings tree (``streamrec.settings.Settings``), kept apart so that each
module stays readable; set from the environment the same way, e.g.
``STREAMREC_OPS__PAGE_PORT=8071``. The alert rules in deploy/monitoring/ use the same
thresholds (tests/unit/test_alert_rules.py checks that they agree).
"""

from __future__ import annotations

from pydantic import BaseModel


class OpsSettings(BaseModel):
    """Job runs, scheduler, ops web page and alerts."""

    # A running job rewrites its job_runs row this often (a heartbeat thread);
    # a "running" row older than `lost_after_s` belongs to a killed process.
    heartbeat_interval_s: float = 30.0
    lost_after_s: float = 600.0
    # `streamrec jobs list`, OpsService.ListJobs and the status page: newest runs shown.
    list_limit: int = 50
    # The status page (and its /metrics of job figures read from job_runs).
    page_host: str = "127.0.0.1"
    page_port: int = 8070
    page_refresh_s: int = 30
    # Scheduler: cron expression (UTC) of the daily knowledge job; hours between alignment runs.
    knowledge_cron: str = "0 3 * * *"
    alignment_interval_h: float = 6.0
    # `streamrec up`: longest wait for the online trainer's first job run in its summary.
    up_trainer_wait_s: float = 60.0
    # A worker's own Prometheus endpoint (trainer, scheduler); port 0 turns it off.
    # All interfaces by default: Prometheus scrapes it from another host or pod.
    worker_metrics_host: str = "0.0.0.0"
    worker_metrics_port: int = 9108
    # Lines of a job's own log kept with its run (job_logs), shown on the run's page.
    log_tail_lines: int = 40
    # Runs per job kind on the page's timelines.
    timeline_runs: int = 30
    # Hours after its last success at which a kind is late (the page's bar, and the
    # KnowledgeJobStale and TrainerStalled rules); a kind not named has no threshold.
    success_alert_h: dict[str, float] = {"knowledge": 26.0, "trainer": 6.0, "alignment": 12.0}
    # Share of the catalog with knowledge below which KnowledgeCoverageLow fires (after 1 h).
    coverage_alert_ratio: float = 0.95
    # Item failures listed by OpsService.GetCoverage and the page (the newest first).
    coverage_failures_shown: int = 20
    # The page's sampler: seconds between samples of consumer lag and dead letters into
    # ClickHouse `ops_samples` (0 turns it off), the consumer group it reads the DLQ with,
    # and the hours of history the page draws.
    sample_interval_s: float = 60.0
    sampler_group: str = "streamrec-ops-page"
    history_h: float = 6.0
