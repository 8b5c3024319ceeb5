"""The Kafka topics of the system, created with partitions and replication from settings."""

from __future__ import annotations

import logging
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    TopicAlreadyExistsError,
)

from streamrec.services import kafka_bootstrap
from streamrec.settings import Settings

log = logging.getLogger(__name__)


def topic_names(settings: Settings) -> list[str]:
    k = settings.kafka
    return [
        k.interactions_topic,
        k.items_topic,
        k.dlq_topic,
        k.training_examples_topic,
        k.knowledge_requests_topic,
        k.model_updates_topic,
        k.history_updates_topic,
    ]


# The stream worker's faust tables (streams/app.py); faust names each one's changelog
# topic `<app id>-<table>-changelog` and compacts it.
SEQUENCES_TABLE = "user-sequences"
KNOWN_ITEMS_TABLE = "known-items"
TABLES = (SEQUENCES_TABLE, KNOWN_ITEMS_TABLE)


def changelog_topic_names(settings: Settings) -> list[str]:
    return [f"{settings.streams.app_id}-{table}-changelog" for table in TABLES]


def await_group_coordinator(admin: KafkaAdminClient, group_id: str, timeout_s: float) -> None:
    """Block until the broker can coordinate `group_id`.

    A new broker creates its offsets topic at the first coordinator lookup and
    answers "not available" until the topic is loaded. The stream worker's
    consumer would retry too, but aiokafka logs each failed lookup as an ERROR.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.describe_groups([group_id])
            return
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics and wait until the stream worker's consumer group can be
    coordinated; returns the names of the topics that were created.

    The tables' changelogs are created here too, although faust would create them: a
    worker that creates them itself reads their metadata before it has spread, and
    aiokafka and faust log that as an ERROR and a WARNING.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=kafka_bootstrap(settings), client_id="streamrec-admin"
    )
    try:
        existing = set(admin.list_topics())
        compacted = {"cleanup.policy": "compact"}
        wanted = [(name, None) for name in topic_names(settings)]
        wanted += [(name, compacted) for name in changelog_topic_names(settings)]
        missing = [(name, config) for name, config in wanted if name not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.kafka.partitions,
                            replication_factor=settings.kafka.replication_factor,
                            topic_configs=config,
                        )
                        for name, config in missing
                    ]
                )
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another client")
        await_group_coordinator(admin, settings.streams.app_id, settings.kafka.start_timeout_s)
        return [name for name, _ in missing]
    finally:
        admin.close()
