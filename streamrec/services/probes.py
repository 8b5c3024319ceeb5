"""Quick looks at a running system, for `streamrec status`: each answers within seconds and
returns None (unknown) rather than raising when what it asks is not there."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from streamrec.services import kafka_bootstrap
from streamrec.settings import Settings

# Asked for recommendations to learn the served version: an id no real user has, so its
# history is empty and the server answers from popular items, naming the version it serves.
PROBE_USER_ID = 2**63 - 1


def consumer_lag(settings: Settings, group: str, topic: str) -> int | None:
    """Messages of `topic` past the offsets `group` has committed (all of a partition it
    never committed on). None when Kafka or the topic cannot be read."""
    # Imported here: kafka-python is slow to import and most commands never need it.
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap(settings),
            group_id=group,
            enable_auto_commit=False,
            client_id="streamrec-status",
        )
    except (KafkaError, RuntimeError):
        return None
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            return None
        partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        lag = 0
        for partition in partitions:
            committed = consumer.committed(partition)
            lag += ends[partition] - (starts[partition] if committed is None else committed)
        return lag
    except KafkaError:
        return None
    finally:
        consumer.close(autocommit=False)


def web_health(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """The `status` a worker's web `/health` page reports ("ok"), or None when none answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout_s) as reply:
            return str(json.loads(reply.read()).get("status"))
    except (OSError, ValueError, urllib.error.URLError):
        return None


def served_model(settings: Settings) -> tuple[str | None, str | None]:
    """The gRPC server's health status and the model version it serves ("" before the first
    one); None for what it does not answer."""
    import grpc

    from streamrec.client import RecommenderClient

    with RecommenderClient.from_settings(settings, host=server_address(settings)) as client:
        try:
            health = client.health(timeout_s=2.0)
        except grpc.RpcError:
            return None, None
        try:
            return health, client.recommend(user_id=PROBE_USER_ID, k=1).model_version
        except grpc.RpcError:
            return health, None


def server_address(settings: Settings) -> str:
    """Where this machine reaches the gRPC server (loopback when it listens on all
    interfaces)."""
    host = settings.serving.host
    return "127.0.0.1" if host in ("0.0.0.0", "[::]", "::") else host
