"""What `bench/online.py` watches while the replay runs, each in a thread of its own:
history probes (event -> visible through `HistoryStore`), the `training-examples` topic
(where each event's example landed, and how many examples exist over time), and the
trainers' Prometheus counters (how many examples each has absorbed over time)."""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.online_report import latency_summary
from streamrec.history import HistoryStore
from streamrec.services import kafka_bootstrap
from streamrec.settings import Settings
from streamrec.v1 import events_pb2


class Watcher:
    """A polling thread: `start()`, then `stop()` ends and joins it."""

    interval_s = 0.05

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _loop(self) -> None:
        self.open()
        try:
            while not self._stop.is_set():
                self.poll()
                self._stop.wait(self.interval_s)
            self.poll()
        finally:
            self.close()

    def open(self) -> None:
        pass

    def poll(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class HistoryProbes(Watcher):
    """Sampled events, timed from their send (flushed) until `HistoryStore` returns them."""

    def __init__(self, settings: Settings, history_length: int):
        super().__init__()
        self.settings = settings
        self.length = history_length
        self.sent: dict[tuple[int, int], float] = {}  # (user, item) -> perf_counter at send
        self.seen: dict[tuple[int, int], float] = {}
        self._lock = threading.Lock()

    def add(self, user: int, item: int, sent_at: float) -> None:
        with self._lock:
            self.sent[(user, item)] = sent_at

    def open(self) -> None:
        self.store = HistoryStore(self.settings)

    def poll(self) -> None:
        with self._lock:
            pending = [key for key in self.sent if key not in self.seen]
        if not pending:
            return
        found = self.store.batch_recent({user for user, _ in pending}, self.length)
        now = time.perf_counter()
        for user, item in pending:
            if any(entry.item_id == item for entry in found.get(user, ())):
                self.seen[(user, item)] = now

    def close(self) -> None:
        self.store.close()

    def latencies(self) -> tuple[list[float], int]:
        """Seconds to visibility of each probe seen, and how many were never seen."""
        seen = [self.seen[key] - self.sent[key] for key in self.sent if key in self.seen]
        return seen, len(self.sent) - len(seen)


class ExamplesTopic(Watcher):
    """Reads `training-examples` from `start` on: each event's example position, and the
    number of examples there over time (what the trainers' lag is measured by)."""

    interval_s = 0.0

    def __init__(self, settings: Settings, start: dict[int, int]):
        super().__init__()
        self.settings = settings
        self.start_offsets = start  # partition -> offset to read from
        self.position: dict[str, tuple[int, int]] = {}  # event id -> (partition, offset)
        self.timeline: list[tuple[float, int]] = []  # (perf_counter, examples so far)
        self.examples = 0

    def open(self) -> None:
        topic = self.settings.kafka.training_examples_topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap(self.settings), enable_auto_commit=False
        )
        partitions = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic)]
        self.consumer.assign(partitions)
        for partition in partitions:
            self.consumer.seek(partition, self.start_offsets.get(partition.partition, 0))

    def poll(self) -> None:
        records = self.consumer.poll(timeout_ms=200, max_records=2000)
        for messages in records.values():
            for message in messages:
                batch = events_pb2.TrainingExampleBatch.FromString(message.value)
                for example in batch.examples:
                    self.position[example.event_id] = (message.partition, message.offset)
                self.examples += len(batch.examples)
        if records:
            self.timeline.append((time.perf_counter(), self.examples))

    def close(self) -> None:
        self.consumer.close()

    def produced_at(self, count: int) -> float | None:
        """When the topic first held `count` examples (None: not yet)."""
        for moment, total in self.timeline:
            if total >= count:
                return moment
        return None


def absorbed_examples(port: int) -> dict[str, float] | None:
    """A trainer's `streamrec_trainer_examples_total` by use, from its metrics port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "streamrec_trainer_examples":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    use = sample.labels.get("use", "")
                    counts[use] = counts.get(use, 0.0) + sample.value
    return counts


class TrainerLag(Watcher):
    """Every couple of seconds: each trainer's absorbed examples against the topic's."""

    interval_s = 2.0

    def __init__(self, ports: dict[str, int], topic: ExamplesTopic):
        super().__init__()
        self.ports = ports
        self.topic = topic
        self.samples: dict[str, list[tuple[float, int, int]]] = {}

    def poll(self) -> None:
        for name, port in self.ports.items():
            counts = absorbed_examples(port)
            if counts is None:
                continue
            absorbed = int(sum(v for use, v in counts.items() if use != "undecodable"))
            self.samples.setdefault(name, []).append(
                (time.perf_counter(), absorbed, self.topic.examples)
            )

    def lag(self, name: str) -> dict:
        """Lag in examples (topic minus absorbed) and in seconds (how long ago the topic
        held as many examples as the trainer has absorbed), over the samples."""
        rows = self.samples.get(name, [])
        examples = [max(total - absorbed, 0) for _, absorbed, total in rows]
        seconds = []
        for moment, absorbed, total in rows:
            if absorbed >= total:
                seconds.append(0.0)
            else:
                reached = self.topic.produced_at(absorbed + 1)
                seconds.append(max(moment - reached, 0.0) if reached is not None else 0.0)
        summary = latency_summary(seconds)
        return {
            "examples_p50": float(np.percentile(examples, 50)) if examples else None,
            "examples_p99": float(np.percentile(examples, 99)) if examples else None,
            "examples_max": max(examples) if examples else None,
            "seconds_p50": summary["p50_s"],
            "seconds_p99": summary["p99_s"],
            "seconds_max": summary["max_s"],
            "samples": len(rows),
        }
