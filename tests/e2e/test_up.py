"""`streamrec up`, the main job, end to end on its own data directory."""

import json
import subprocess

from kafka import KafkaConsumer, TopicPartition

from streamrec.db import connect
from streamrec.services import LocalServices, free_port
from streamrec.services.children import run_streamrec
from streamrec.services.process import pid_alive
from streamrec.settings import Settings


def _count_messages(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(partitions)
    starts = consumer.beginning_offsets(partitions)
    consumer.close()
    return sum(ends[p] - starts[p] for p in partitions)


def _streamrec(*args: str, env: dict) -> subprocess.CompletedProcess:
    return run_streamrec(*args, environment=env, timeout_s=600)


def test_up_streams_movielens_into_kafka_and_clickhouse(tmp_path):
    env = {
        "STREAMREC_DATA_DIR": str(tmp_path),
        # The quick first model `up` trains for serving: kept tiny here.
        "STREAMREC_SERVING__FIRST_MODEL_EPOCHS": "1",
        "STREAMREC_SERVING__FIRST_MODEL_MAX_USERS": "200",
        "STREAMREC_SERVING__PORT": str(free_port()),
        "STREAMREC_OPS__WORKER_METRICS_PORT": "0",
    }
    # A damaged version already in the registry (its weights cut short): `up` must not
    # serve it, but train and serve a first model of its own.
    damaged = tmp_path / "registry" / "seralm" / "v000001"
    damaged.mkdir(parents=True)
    (damaged / "metadata.json").write_text(json.dumps({"family": "seralm", "version": "v000001"}))
    (damaged / "config.json").write_text('{"family": "seralm", "model_type": "sasrec"')
    # The knowledge run (minutes of LLM generation for 1682 items on CPU) is left out here;
    # tests/integration/test_knowledge_job.py runs the job itself.
    result = _streamrec(
        "up", "--limit", "5000", "--detach", "--no-assets", "--no-knowledge", env=env
    )
    settings = LocalServices(Settings(data_dir=tmp_path)).connected_settings()
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ClickHouse holds 5,000 interactions of ml-100k" in result.stderr
        # It served the model it trained and printed recommendations.
        assert "seralm/v000001 does not load" in result.stderr
        assert "published seralm/v000002" in result.stderr
        assert "user 1: top 5 (v000002)" in result.stderr
        assert "user 3: top 5" in result.stderr
        # The online trainer warm-started from that model and began its first cycle.
        assert "online trainer: consuming training-examples" in result.stderr
        assert "trainer-" in result.stdout and "running" in result.stdout
        bootstrap = settings.kafka.bootstrap_servers
        assert _count_messages(bootstrap, settings.kafka.interactions_topic) == 5000
        assert _count_messages(bootstrap, settings.kafka.items_topic) == 1682
        client = connect(settings)
        assert client.execute("SELECT count() FROM interactions FINAL") == [(5000,)]
        assert client.execute("SELECT count() FROM items FINAL") == [(1682,)]
        client.disconnect()
    finally:
        status = json.loads(_streamrec("services", "status", env=env).stdout)
        stopped = _streamrec("services", "stop", env=env)
    assert stopped.returncode == 0
    assert status["kafka"]["running"] and status["clickhouse"]["running"]
    assert not any(pid_alive(status[name]["pid"]) for name in ("kafka", "clickhouse"))
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
