"""What `streamrec status` reads from a real broker: a consumer group's lag."""

from __future__ import annotations

import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from streamrec.services.probes import consumer_lag


def test_consumer_lag_counts_what_the_group_has_not_committed(services):
    settings = services.settings
    bootstrap = settings.kafka.bootstrap_servers
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for partition, count in ((0, 7), (1, 5)):
        for _ in range(count):
            producer.send(topic, b"x", partition=partition)
    producer.flush()
    producer.close()
    # A group that never committed lags by everything.
    assert consumer_lag(settings, group, topic) == 12
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1)})
    consumer.close(autocommit=False)
    # Partition 0: 3 past its commit; partition 1: all 5.
    assert consumer_lag(settings, group, topic) == 8
    assert consumer_lag(settings, group, f"missing-{topic}") is None
