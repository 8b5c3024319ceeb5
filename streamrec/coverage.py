"""Knowledge coverage: how much of the catalog has LLM knowledge for the current LLM and
prompt versions, what is waiting for it, and what failed and why.

"Current" is what the newest knowledge run worked for (`knowledge_targets`, written by
the knowledge job as it starts): the kernel cannot load the LLM to know its version, and
the job is what decides it. OpsService.GetCoverage, the status page and its /metrics (and
so the KnowledgeCoverageLow rule) all read `knowledge_coverage`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from streamrec.db import connect
from streamrec.settings import Settings


@dataclass
class ItemFailure:
    item_id: int
    reason: str
    run_id: str
    failed_ms: int


@dataclass
class Coverage:
    llm_version: str  # "" until a knowledge run has started
    prompt_version: str
    catalog_items: int  # items in the catalog (not deleted)
    covered_items: int  # of those, items with knowledge for these versions
    pending_requests: int | None  # knowledge-requests not read by the job yet (None: unknown)
    failed_items: int  # items lacking knowledge whose last attempt failed
    oldest_missing_age_s: float  # since the catalog update of the oldest item lacking it
    failures: list[ItemFailure] = field(default_factory=list)  # the newest, with the reason

    @property
    def ratio(self) -> float:
        """Share of the catalog covered; 1.0 for an empty catalog (nothing is missing)."""
        return self.covered_items / self.catalog_items if self.catalog_items else 1.0

    @property
    def missing_items(self) -> int:
        return self.catalog_items - self.covered_items

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "missing_items": self.missing_items}


def record_target(client, run_id: str, llm_version: str, prompt_version: str) -> None:
    """Say which versions a knowledge run gives knowledge for (called as it starts)."""
    client.execute(
        "INSERT INTO knowledge_targets (run_id, llm_version, prompt_version, started_ms) VALUES",
        [(run_id, llm_version, prompt_version, int(time.time() * 1000))],
    )


def record_failures(
    client, run_id: str, llm_version: str, prompt_version: str, item_ids, reason: str
) -> None:
    """Items a knowledge run could not give knowledge, with why (the error's text)."""
    now = int(time.time() * 1000)
    rows = [(int(i), llm_version, prompt_version, run_id, reason[:1000], now) for i in item_ids]
    if rows:
        client.execute(
            "INSERT INTO knowledge_failures "
            "(item_id, llm_version, prompt_version, run_id, reason, failed_ms) VALUES",
            rows,
        )


def current_versions(client) -> tuple[str, str]:
    """The LLM and prompt versions of the newest knowledge run ("", "" before any)."""
    rows = client.execute(
        "SELECT llm_version, prompt_version FROM knowledge_targets ORDER BY started_ms DESC LIMIT 1"
    )
    return rows[0] if rows else ("", "")


def pending_requests(settings: Settings) -> int | None:
    """Requests on `knowledge-requests` the knowledge job's consumer group has not read."""
    from streamrec.services.probes import consumer_lag

    return consumer_lag(
        settings, settings.knowledge.job_group, settings.kafka.knowledge_requests_topic
    )


def knowledge_coverage(settings: Settings, with_pending: bool = True) -> Coverage:
    """The coverage figures now; `with_pending=False` skips asking Kafka."""
    client = connect(settings)
    try:
        llm, prompt = current_versions(client)
        versions = {"llm": llm, "prompt": prompt}
        covered = (
            "SELECT item_id FROM item_knowledge "
            "WHERE llm_version = %(llm)s AND prompt_version = %(prompt)s"
        )
        (catalog, have, oldest_ms), *_ = client.execute(
            f"SELECT count(), countIf(item_id IN ({covered})), "
            f"minIf(updated_ms, item_id NOT IN ({covered})) "
            "FROM items FINAL WHERE deleted = 0",
            versions,
        )
        failed_rows = client.execute(
            "SELECT item_id, argMax(reason, failed_ms), argMax(run_id, failed_ms), max(failed_ms) "
            "FROM knowledge_failures WHERE llm_version = %(llm)s AND prompt_version = %(prompt)s "
            f"AND item_id NOT IN ({covered}) "
            "AND item_id IN (SELECT item_id FROM items FINAL WHERE deleted = 0) "
            "GROUP BY item_id ORDER BY max(failed_ms) DESC, item_id",
            versions,
        )
    finally:
        client.disconnect()
    missing = catalog - have
    return Coverage(
        llm_version=llm,
        prompt_version=prompt,
        catalog_items=catalog,
        covered_items=have,
        pending_requests=pending_requests(settings) if with_pending else None,
        failed_items=len(failed_rows),
        oldest_missing_age_s=max(0.0, time.time() - oldest_ms / 1000) if missing else 0.0,
        failures=[
            ItemFailure(int(i), reason, run_id, int(ms))
            for i, reason, run_id, ms in failed_rows[: settings.ops.coverage_failures_shown]
        ],
    )
