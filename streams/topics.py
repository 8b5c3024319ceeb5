"""The Kafka topics of the system, created with partitions and replication from settings."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

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
    ]


def ensure_topics(settings: Settings) -> list[str]:
    """Create the missing topics; returns the names that were created."""
    admin = KafkaAdminClient(
        bootstrap_servers=kafka_bootstrap(settings), client_id="streamrec-admin"
    )
    try:
        existing = set(admin.list_topics())
        missing = [name for name in topic_names(settings) if name not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.kafka.partitions,
                            replication_factor=settings.kafka.replication_factor,
                        )
                        for name in missing
                    ]
                )
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another client")
        return missing
    finally:
        admin.close()
