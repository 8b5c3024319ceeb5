"""Ingestion benchmark: producer -> Kafka -> stream worker -> rows readable in ClickHouse.

    python -m bench.ingest --json bench/results/ingest.json [--events 1000000]

Each part runs on topics, a consumer group and a database of its own, on Kafka
and ClickHouse started in a temporary data directory for the run:

- one worker, end to end: from the first send of `--events` events until every
  row is readable; then kafka-python consumes the same topic's bytes (no
  decoding), the broker's ceiling here;
- two workers (one consumer group over the topic's partitions), the same way;
- freshness: events sent at `--rate`/s; every 20th is a probe whose time from
  its send until it is readable through `HistoryStore`, and until its training
  example is on the training-examples topic, is measured in the same run;
- the producer side: the SDK (`InteractionProducer`, which validates and encodes
  each event), a dataset `replay`, and kafka-python sending bytes encoded
  beforehand, so that the SDK's own cost is known.

`--profile` samples the one-worker part's worker with py-spy from its first send to
its last row stored, and puts where its CPU went in the JSON (`one_worker.profile`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench import pyspy
from bench.common import isolated_settings, local_services, parser, percentile
from bench.results import write_result
from streamrec.db import count_rows
from streamrec.history import HistoryStore
from streamrec.services import LocalServices, kafka_bootstrap
from streamrec.services.children import StreamWorker, wait_for
from streamrec.services.process import free_port
from streamrec.settings import Settings
from streamrec.v1 import events_pb2
from streams.producer import InteractionProducer, now_ms
from streams.replay import replay_dataset

NUM_USERS, NUM_ITEMS = 10_000, 50_000
PROBE_USER_BASE, PROBE_USERS, PROBE_EVERY = 10_000_000, 2_000, 20
# Time for a new worker to join its group before the clock starts.
JOIN_S = 8.0


def _events(count: int, seed: int = 0):
    """`count` clicks (Zipf-like users and items), stamped now."""
    rng = random.Random(seed)
    users = [int(NUM_USERS * rng.random() ** 2) + 1 for _ in range(4096)]
    items = [int(NUM_ITEMS * rng.random() ** 3) + 1 for _ in range(4096)]
    stamp = now_ms()
    for n in range(count):
        yield events_pb2.InteractionEvent(
            event_id=f"b{seed}-{n}",
            user_id=users[n % 4096],
            item_id=items[(n * 7) % 4096],
            event_type=events_pb2.EVENT_TYPE_CLICK,
            timestamp_ms=stamp + n // 1000,
        )


def _produce(settings: Settings, count: int, seed: int = 0) -> float:
    """Send `count` clicks with the SDK; returns the seconds taken until all are acknowledged."""
    started = time.perf_counter()
    with InteractionProducer.from_settings(settings) as producer:
        for event in _events(count, seed):
            producer.send_event(event)
    return time.perf_counter() - started


def _raw_consume_rate(settings: Settings, count: int) -> float:
    """kafka-python reading the topic's bytes, no decoding: the broker's ceiling here."""
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


@contextmanager
def _workers(launcher: LocalServices, workdir: Path, name: str, count: int = 1, **variables):
    """`count` stream workers in one consumer group, on settings of their own."""
    settings, environment = isolated_settings(launcher, **variables)
    workers = []
    for n in range(count):
        port = {"STREAMREC_STREAMS__WEB_PORT": str(free_port())} if n else {}
        workers.append(
            StreamWorker(settings, {**environment, **port}, workdir / f"worker-{name}-{n}.log")
        )
    for worker in workers:
        worker.start()
    try:
        time.sleep(JOIN_S * count)
        yield settings, workers
    finally:
        for worker in workers:
            worker.stop()


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    """The most resident memory a process has had (Linux /proc, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for process {pid}")


def throughput_run(
    launcher: LocalServices,
    count: int,
    workdir: Path,
    workers: int = 1,
    profile: bool = False,
    **variables,
) -> dict:
    with _workers(launcher, workdir, f"{workers}x{count}", workers, **variables) as (
        settings,
        children,
    ):
        cpu = [_cpu_seconds(child.process.pid) for child in children]
        raw_profile = workdir / f"worker-{workers}x{count}.pyspy"
        # Longer than the run: py-spy stops when the worker does.
        sampler = pyspy.start(children[0].process.pid, 3600, raw_profile) if profile else None
        started = time.perf_counter()
        produce_s = _produce(settings, count)
        wait_for(
            lambda: count_rows(settings, "interactions") >= count,
            3600,
            f"{count} rows",
            children[0],
        )
        elapsed = time.perf_counter() - started
        cpu = sum(_cpu_seconds(c.process.pid) - s for c, s in zip(children, cpu, strict=True))
        peak_rss = max(_peak_rss_mb(child.process.pid) for child in children)
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            sampler.wait(60)
    run = {
        "workers": workers,
        "events": count,
        "rows_stored": count_rows(settings, "interactions", final=True),
        "seconds": round(elapsed, 2),
        "produce_seconds": round(produce_s, 2),
        "events_per_s": round(count / elapsed),
        # Load-independent: the workers' CPU time per event, and the rate one core would
        # give at that cost (the machine's other work shares the cores).
        "worker_cpu_us_per_event": round(cpu / count * 1e6, 1),
        "events_per_cpu_s": round(count / cpu),
        "worker_peak_rss_mb": peak_rss,
    }
    if profile:
        run["profile"] = pyspy.summary(raw_profile, top=25)
    if workers == 1:
        raw = _raw_consume_rate(settings, count)
        run["raw_consume_per_s"] = round(raw)
        run["ratio_to_raw_consume"] = round(count / elapsed / raw, 3)
    return run


class _ExampleWatch:
    """Notes when each probe's training example reaches the training-examples topic."""

    def __init__(self, settings: Settings):
        self.seen_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers, fetch_max_wait_ms=10
        )
        topic = settings.kafka.training_examples_topic
        partitions = [TopicPartition(topic, p) for p in self._consumer.partitions_for_topic(topic)]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end now, before probes are sent
            self._consumer.position(partition)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for record in records:
                    batch = events_pb2.TrainingExampleBatch.FromString(record.value)
                    for example in batch.examples:
                        if example.event_id.startswith("p"):
                            self.seen_at.setdefault(example.event_id, now)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _HistoryWatch:
    """Notes when each probe is readable through `HistoryStore` (among its user's last 5)."""

    def __init__(self, settings: Settings):
        self.pending: dict[int, list[tuple[str, int]]] = {}  # user -> [(probe id, item)]
        self.seen_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._store = HistoryStore(settings)
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def expect(self, user: int, probe: str, item: int) -> None:
        with self._lock:
            self.pending.setdefault(user, []).append((probe, item))

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                users = list(self.pending)
            if not users:
                time.sleep(0.01)
                continue
            found = self._store.batch_recent(users, 5)
            now = time.perf_counter()
            with self._lock:
                for user, entries in found.items():
                    items = {entry.item_id for entry in entries}
                    waiting = self.pending.get(user, [])
                    for probe, item in [p for p in waiting if p[1] in items]:
                        self.seen_at.setdefault(probe, now)
                        waiting.remove((probe, item))
                    if not waiting:
                        self.pending.pop(user, None)
            time.sleep(0.01)
        self._store.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _latencies(sent_at: dict[str, float], seen_at: dict[str, float]) -> dict:
    values = sorted(seen_at[p] - sent_at[p] for p in sent_at if p in seen_at)
    return {
        "seen": len(values),
        "p50_s": round(percentile(values, 50), 3),
        "p99_s": round(percentile(values, 99), 3),
        "max_s": round(values[-1], 3) if values else None,
    }


def freshness_run(launcher: LocalServices, workdir: Path, rate: float, seconds: float) -> dict:
    """Events at `rate`/s for `seconds`; every 20th is a probe on a user with a history,
    timed until it is readable and until its training example is out."""
    with _workers(launcher, workdir, "freshness") as (settings, children):
        with InteractionProducer.from_settings(settings, linger_ms=0) as producer:
            for user in range(PROBE_USER_BASE, PROBE_USER_BASE + PROBE_USERS):  # histories
                producer.send(user_id=user, item_id=1, event_id=f"h{user}")
        wait_for(
            lambda: count_rows(settings, "interactions") >= PROBE_USERS,
            120,
            "probe histories",
            children[0],
        )
        history, examples = _HistoryWatch(settings), _ExampleWatch(settings)
        rng = random.Random(1)
        sent_at: dict[str, float] = {}
        total = int(rate * seconds)
        with InteractionProducer.from_settings(settings, linger_ms=0) as producer:
            started = time.perf_counter()
            for n in range(total):
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                item = rng.randint(1, NUM_ITEMS)
                if n % PROBE_EVERY:
                    producer.send(user_id=rng.randint(1, NUM_USERS), item_id=item, event_id=f"f{n}")
                    continue
                probe, user = f"p{n}", PROBE_USER_BASE + (n // PROBE_EVERY) % PROBE_USERS
                item = NUM_ITEMS + n  # unique, so HistoryStore shows this very probe
                history.expect(user, probe, item)
                sent_at[probe] = time.perf_counter()
                producer.send(user_id=user, item_id=item, event_id=probe)
            achieved = total / (time.perf_counter() - started)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and (
            len(history.seen_at) < len(sent_at) or len(examples.seen_at) < len(sent_at)
        ):
            time.sleep(0.1)
        history.stop()
        examples.stop()
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(achieved),
        "seconds": seconds,
        "probes": len(sent_at),
        "history": _latencies(sent_at, history.seen_at),
        "example": _latencies(sent_at, examples.seen_at),
    }


def producer_run(launcher: LocalServices, count: int, dataset: str) -> dict:
    """The SDK's send rate, a dataset replay's, and kafka-python's for bytes encoded
    beforehand, to the same broker with the SDK's producer settings."""
    settings, _ = isolated_settings(launcher)
    sdk_s = _produce(settings, count, seed=7)
    payloads = [
        (str(event.user_id).encode(), event.SerializeToString()) for event in _events(count, 8)
    ]
    k = settings.kafka
    raw = KafkaProducer(
        bootstrap_servers=kafka_bootstrap(settings),
        acks="all",
        linger_ms=k.linger_ms,
        batch_size=k.batch_size,
        compression_type=k.compression_type or None,
        max_in_flight_requests_per_connection=1,
    )
    started = time.perf_counter()
    for key, value in payloads:
        raw.send(k.interactions_topic, key=key, value=value)
    raw.flush()
    raw_s = time.perf_counter() - started
    raw.close()
    replay = replay_dataset(settings, dataset, show_progress=False)
    return {
        "events": count,
        "sdk_per_s": round(count / sdk_s),
        "raw_kafka_python_per_s": round(count / raw_s),
        "sdk_ratio_to_raw": round(raw_s / sdk_s, 3),
        "replay": {"dataset": dataset, "events": replay.interactions},
        "replay_per_s": round(replay.events_per_s),
    }


@contextmanager
def _load_watch():
    """The 1-minute load average, sampled every 5 s while the bench runs."""
    samples, stop = [], threading.Event()

    def watch() -> None:
        while not stop.wait(5.0):
            samples.append(os.getloadavg()[0])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def main() -> None:
    options = parser("ingest", __doc__)
    options.add_argument("--events", type=int, default=1_000_000)
    options.add_argument("--rate", type=float, default=5000.0, help="freshness run: events/s")
    options.add_argument("--seconds", type=float, default=30.0, help="freshness run: duration")
    options.add_argument("--producer-events", type=int, default=200_000)
    options.add_argument("--dataset", default="ml-100k", help="the producer part's replay")
    options.add_argument(
        "--profile", action="store_true", help="py-spy the one-worker run's worker"
    )
    options.add_argument(
        "--parts", nargs="+", default=["one", "two", "freshness", "producer"], help="what to run"
    )
    args = options.parse_args()

    report: dict = {"benchmark": "ingest", "events": args.events}
    with local_services("streamrec-bench-") as (workdir, launcher), _load_watch() as load:
        if "one" in args.parts:
            run = throughput_run(launcher, args.events, workdir, profile=args.profile)
            print(json.dumps(run), flush=True)
            report.update(
                events_per_s=run["events_per_s"],
                raw_consume_per_s=run["raw_consume_per_s"],
                ratio_to_raw_consume=run["ratio_to_raw_consume"],
                one_worker=run,
            )
        if "two" in args.parts:
            run = throughput_run(launcher, args.events, workdir, workers=2)
            print(json.dumps(run), flush=True)
            report["two_workers_events_per_s"] = run["events_per_s"]
            if "events_per_s" in report:
                report["two_workers_scaling"] = round(
                    run["events_per_s"] / report["events_per_s"], 2
                )
            report["two_workers"] = run
        if "freshness" in args.parts:
            run = freshness_run(launcher, workdir, args.rate, args.seconds)
            print(json.dumps(run), flush=True)
            report["freshness"] = {
                "offered_per_s": run["offered_per_s"],
                "history_p99_s": run["history"]["p99_s"],
                "example_p99_s": run["example"]["p99_s"],
                **run,
            }
        if "producer" in args.parts:
            run = producer_run(launcher, args.producer_events, args.dataset)
            print(json.dumps(run), flush=True)
            report["producer"] = run
    report["load_average"] = round(statistics.fmean(load), 2) if load else os.getloadavg()[0]
    print(f"wrote {write_result(args.json, report)}")


if __name__ == "__main__":
    main()
