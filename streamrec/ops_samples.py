"""The history the status page draws: consumer lag per group and dead letters per reason,
sampled every `ops.sample_interval_s` into ClickHouse `ops_samples`.

Prometheus keeps these figures too, but the page must not need a Prometheus to show the
last hours, and the stream worker's counters restart with the process. So the page's
sampler asks Kafka itself: each consumer group's committed lag, and the dead letters that
arrived on the DLQ topic since the last sample (read with a consumer group of its own,
counted by the reason's code, the part before the colon).
"""

from __future__ import annotations

import logging
import threading
import time

from streamrec.db import connect
from streamrec.settings import Settings

log = logging.getLogger(__name__)

LAG, DEAD_LETTERS = "lag", "dead_letters"
# Longest a sample reads the DLQ: a flood (or a first sample's backlog) is counted over
# the next samples instead of holding this one.
READ_LETTERS_S = 10.0


def watched_groups(settings: Settings) -> list[tuple[str, str]]:
    """(consumer group, topic) of every consumer whose lag ops watch."""
    kafka = settings.kafka
    return [
        (settings.streams.app_id, kafka.interactions_topic),
        (settings.workers.trainer_group, kafka.training_examples_topic),
        (settings.knowledge.job_group, kafka.knowledge_requests_topic),
    ]


def reason_code(reason: str) -> str:
    """`bad_user_id: user_id must be positive, got -1` -> `bad_user_id`."""
    return reason.split(":", 1)[0].strip() or "unknown"


class Sampler:
    """One sample per `sample()` call; `start()` runs them on a daemon thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._consumer = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _dlq(self):
        """The DLQ consumer, once the topic exists (None before: no letters yet)."""
        if self._consumer is None:
            from kafka import KafkaConsumer

            from streamrec.services import kafka_bootstrap

            consumer = KafkaConsumer(
                bootstrap_servers=kafka_bootstrap(self.settings),
                group_id=self.settings.ops.sampler_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id="streamrec-ops-sampler",
            )
            # Known before joining, as the trainer does: a group that joins before the
            # topic's metadata arrived is assigned nothing, and kafka-python warns.
            if not consumer.partitions_for_topic(self.settings.kafka.dlq_topic):
                consumer.close(autocommit=False)
                return None
            consumer.subscribe([self.settings.kafka.dlq_topic])
            self._consumer = consumer
        return self._consumer

    def dead_letters(self) -> dict[str, int]:
        """Letters per reason code read since the last call (older than the page's history
        window are not counted: a first sample must not draw the whole backlog as now)."""
        from streamrec.v1 import events_pb2

        consumer = self._dlq()
        if consumer is None:
            return {}
        oldest_ms = (time.time() - self.settings.ops.history_h * 3600) * 1000
        counts: dict[str, int] = {}
        deadline = time.monotonic() + READ_LETTERS_S
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=1000, max_records=5000)
            if not batches:
                break
            for messages in batches.values():
                for message in messages:
                    letter = events_pb2.DeadLetter()
                    try:
                        letter.ParseFromString(message.value)
                    except Exception:  # a letter that is not one still counts, as unreadable
                        letter.reason, letter.timestamp_ms = "unreadable", message.timestamp
                    if letter.timestamp_ms >= oldest_ms:
                        code = reason_code(letter.reason)
                        counts[code] = counts.get(code, 0) + 1
        consumer.commit()
        return counts

    def sample(self) -> int:
        """Write one sample; returns the rows written."""
        from streamrec.services.probes import consumer_lag

        now = int(time.time() * 1000)
        rows = []
        for group, topic in watched_groups(self.settings):
            lag = consumer_lag(self.settings, group, topic)
            if lag is not None:
                rows.append((LAG, f"{group} on {topic}", now, float(lag)))
        letters = self.dead_letters()
        rows.append((DEAD_LETTERS, "all", now, float(sum(letters.values()))))
        rows += [(DEAD_LETTERS, code, now, float(n)) for code, n in sorted(letters.items())]
        client = connect(self.settings)
        try:
            client.execute(
                "INSERT INTO ops_samples (figure, label, sampled_ms, value) VALUES", rows
            )
        finally:
            client.disconnect()
        return len(rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as error:  # Kafka or ClickHouse away: try again next time
                log.warning("ops sample not taken: %s", error)
            self._stop.wait(self.settings.ops.sample_interval_s)

    def start(self) -> None:
        if self.settings.ops.sample_interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="ops-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)


def history(settings: Settings, figure: str, hours: float) -> dict[str, list[tuple[int, float]]]:
    """Per label, the (sampled_ms, value) points of the last `hours`, oldest first."""
    client = connect(settings)
    try:
        rows = client.execute(
            "SELECT label, sampled_ms, value FROM ops_samples FINAL "
            "WHERE figure = %(figure)s AND sampled_ms >= %(since)s ORDER BY label, sampled_ms",
            {"figure": figure, "since": int((time.time() - hours * 3600) * 1000)},
        )
    finally:
        client.disconnect()
    series: dict[str, list[tuple[int, float]]] = {}
    for label, ms, value in rows:
        series.setdefault(label, []).append((int(ms), float(value)))
    return series
