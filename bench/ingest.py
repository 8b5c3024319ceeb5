"""Ingestion benchmark: producer -> Kafka -> stream worker -> rows readable in ClickHouse.

    python -m bench.ingest --json bench/out/ingest.json [--events 100000 1000000]

For each size it reports end-to-end throughput (from the first send until
every row is readable), and in the same run the raw rate at which kafka-python
consumes the same events from the same broker, to give their ratio. Then it
sends events at a fixed rate and measures freshness: the time from sending a
probe event to seeing it through `HistoryStore`. Kafka and ClickHouse are started
in a temporary data directory for the run.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from bench.common import isolated_settings, local_services, parser, percentile
from bench.results import write_result
from streamrec.db import count_rows
from streamrec.history import HistoryStore
from streamrec.services import LocalServices
from streamrec.services.children import StreamWorker, wait_for
from streamrec.settings import Settings
from streamrec.v1 import events_pb2
from streams.producer import InteractionProducer, now_ms

NUM_USERS, NUM_ITEMS = 10_000, 50_000
PROBE_USER_BASE = 10_000_000


def _produce(settings: Settings, count: int, seed: int = 0) -> float:
    """Send `count` clicks (Zipf-like users and items); returns seconds taken."""
    rng = random.Random(seed)
    users = [int(NUM_USERS * rng.random() ** 2) + 1 for _ in range(4096)]
    items = [int(NUM_ITEMS * rng.random() ** 3) + 1 for _ in range(4096)]
    started = time.perf_counter()
    with InteractionProducer.from_settings(settings) as producer:
        stamp = now_ms()
        for n in range(count):
            producer.send_event(
                events_pb2.InteractionEvent(
                    event_id=f"b{seed}-{n}",
                    user_id=users[n % 4096],
                    item_id=items[(n * 7) % 4096],
                    event_type=events_pb2.EVENT_TYPE_CLICK,
                    timestamp_ms=stamp + n // 1000,
                )
            )
    return time.perf_counter() - started


def _raw_consume_rate(settings: Settings, count: int) -> float:
    """kafka-python reading the same topic's bytes, no decoding: the broker's ceiling here."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        consumer_timeout_ms=5000,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    topic = settings.kafka.interactions_topic
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen, started = 0, time.perf_counter()
    while seen < count:
        batches = consumer.poll(timeout_ms=1000, max_records=5000)
        if not batches and time.perf_counter() - started > 120:
            break
        seen += sum(len(records) for records in batches.values())
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def throughput_run(launcher: LocalServices, count: int, workdir: Path) -> dict:
    settings, overrides = isolated_settings(launcher)
    worker = StreamWorker(settings, overrides, workdir / f"worker-{count}.log")
    worker.start()
    # Let the worker join its group before timing starts.
    time.sleep(8)
    started = time.perf_counter()
    produce_s = _produce(settings, count)
    wait_for(lambda: count_rows(settings, "interactions") >= count, 3600, f"{count} rows", worker)
    elapsed = time.perf_counter() - started
    worker.stop()
    raw = _raw_consume_rate(settings, count)
    stored = count_rows(settings, "interactions", final=True)
    return {
        "events": count,
        "rows_stored": stored,
        "seconds": round(elapsed, 2),
        "produce_seconds": round(produce_s, 2),
        "events_per_s": round(count / elapsed),
        "raw_consume_per_s": round(raw),
        "ratio_to_raw_consume": round(count / elapsed / raw, 3),
    }


def freshness_run(launcher: LocalServices, rate: float, seconds: float, workdir: Path) -> dict:
    """Events at `rate`/s; every 20th is a probe on its own user, timed until it is readable."""
    settings, overrides = isolated_settings(launcher)
    worker = StreamWorker(settings, overrides, workdir / "worker-freshness.log")
    worker.start()
    time.sleep(8)
    sent_at: dict[int, float] = {}
    seen_at: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        store = HistoryStore(settings)
        while True:
            pending = [u for u in list(sent_at) if u not in seen_at]
            if done.is_set() and (not pending or time.perf_counter() - finished[0] > 30):
                break
            if pending:
                found = store.batch_recent(pending, 1)
                now = time.perf_counter()
                for user in found:
                    seen_at.setdefault(user, now)
            time.sleep(0.02)
        store.close()

    finished = [0.0]
    poller = threading.Thread(target=poll)
    poller.start()
    rng = random.Random(1)
    total = int(rate * seconds)
    with InteractionProducer.from_settings(settings, linger_ms=0) as producer:
        started = time.perf_counter()
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            probe = n % 20 == 0
            user = PROBE_USER_BASE + n if probe else rng.randint(1, NUM_USERS)
            producer.send(user_id=user, item_id=rng.randint(1, NUM_ITEMS), event_id=f"f{n}")
            if probe:
                producer.flush()
                sent_at[user] = time.perf_counter()
        achieved = total / (time.perf_counter() - started)
    finished[0] = time.perf_counter()
    done.set()
    poller.join()
    worker.stop()
    latencies = sorted(seen_at[u] - sent_at[u] for u in seen_at)
    return {
        "rate": rate,
        "achieved_rate": round(achieved),
        "probes": len(sent_at),
        "probes_seen": len(latencies),
        "freshness_p50_s": round(percentile(latencies, 50), 3),
        "freshness_p99_s": round(percentile(latencies, 99), 3),
        "freshness_max_s": round(latencies[-1], 3),
    }


def main() -> None:
    options = parser("ingest", __doc__)
    options.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    options.add_argument("--rate", type=float, default=2000.0, help="freshness run: events/s")
    options.add_argument("--seconds", type=float, default=30.0, help="freshness run: duration")
    args = options.parse_args()

    with local_services("streamrec-bench-") as (workdir, launcher):
        runs = []
        for count in args.events:
            run = throughput_run(launcher, count, workdir)
            print(json.dumps(run), flush=True)
            runs.append(run)
        freshness = freshness_run(launcher, args.rate, args.seconds, workdir)
        print(json.dumps(freshness), flush=True)
    largest = max(runs, key=lambda r: r["events"])
    report = {
        "benchmark": "ingest",
        "events": largest["events"],
        "events_per_s": largest["events_per_s"],
        "raw_consume_per_s": largest["raw_consume_per_s"],
        "ratio_to_raw_consume": largest["ratio_to_raw_consume"],
        "freshness_p50_s": freshness["freshness_p50_s"],
        "freshness_p99_s": freshness["freshness_p99_s"],
        "throughput_runs": runs,
        "freshness_run": freshness,
    }
    print(f"wrote {write_result(args.json, report)}")


if __name__ == "__main__":
    main()
