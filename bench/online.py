"""Prequential (test-then-train) evaluation of the live loop on MovieLens-100K.

    python -m bench.online --json bench/results/online.json [--day-seconds 8] [--quick]

The events before the median timestamp train the initial models offline; the rest are
replayed in time order through Kafka -> stream worker -> ClickHouse -> online trainers ->
registry -> `streamrec serve`, one simulated day every `--day-seconds`. The replay goes
in ticks of `--tick-minutes` of simulated time: once everything sent before the tick is
stored (so the server's ClickHouse history holds it), each event of the tick is asked
from every variant's server over gRPC (its top-10, the user's earlier items excluded),
and only then are the tick's events sent. Four variants, one run, one stream:

- static: the initial model, never updated;
- online: the online trainer fine-tuning it on `training-examples` (growing its item
  table for items it has not seen);
- daily_retrain: SASRec retrained from scratch on all events so far at each simulated
  day boundary (in this process; a boundary passed mid-retrain starts the next one as
  soon as it ends);
- online_knowledge: a knowledge-fused SASRec with its own online trainer, whose one
  knowledge channel is the facts channel (the catalog's facts encoded, no LLM text, so
  the LLM's CPU time decides nothing); the items new since the split reach it through
  the knowledge job's `extend_items` before the replay, their facts encoded from the
  catalog that the bench writes to ClickHouse `items`.

Each variant has its own registry family and server. The JSON holds NDCG@10 / HR@10
overall, per simulated week and on cold items (first seen after the split), the bootstrap
interval over users of each gain on static, training compute, freshness (event ->
history, event -> first version that has trained on it, version interval, trainer lag)
and the online trainer's rate draining the topic afterwards; a PNG plot lies beside it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import psutil
from kafka import KafkaConsumer, TopicPartition

from bench.common import isolated_settings, local_services, parser, use_threads
from bench.online_models import (
    DailyRetrain,
    add_new_items,
    catalog_knowledge,
    train_and_publish,
)
from bench.online_plot import plot_weeks
from bench.online_replay import DATASET, VARIANTS, Replay
from bench.online_report import (
    bootstrap_gain,
    check_targets,
    first_version_times,
    latency_summary,
    variant_figures,
)
from bench.online_watch import ExamplesTopic, HistoryProbes, TrainerLag, absorbed_examples
from bench.results import write_result
from streamrec.client import RecommenderClient
from streamrec.datasets import load_dataset
from streamrec.db import connect
from streamrec.logs import configure
from streamrec.registry import ModelRegistry
from streamrec.services import kafka_bootstrap
from streamrec.services.children import StreamrecProcess, StreamWorker, wait_for
from streamrec.services.process import free_port
from streams.producer import InteractionProducer, now_ms
from streams.replay import replayed_event

log = logging.getLogger("bench.online")

TRAINED_ONLINE = ("online", "online_knowledge")
# Settings of every process of the run (children get them as variables, so does this one).
RUN_SETTINGS = {
    "STREAMREC_SERVING__HISTORY_CACHE_TTL_S": "0",  # the history as stored, for every ask
    "STREAMREC_SERVING__TORCH_THREADS": "1",
    "STREAMREC_SERVING__METRICS_PORT": "0",
    "STREAMREC_SERVING__RELOAD_POLL_S": "5",
    "STREAMREC_SERVING__DEVICE": "cpu",
    "STREAMREC_WORKERS__DEVICE": "cpu",
    "STREAMREC_RECOMMENDER__DEVICE": "cpu",
    # Stored sooner than the default 0.5 s: each tick waits for the last one's events.
    "STREAMREC_STREAMS__SINK_FLUSH_INTERVAL_S": "0.2",
}


def family_of(variant: str) -> str:
    return f"online-bench-{variant.replace('_', '-')}"


class LiveSystem:
    """The run's children: a stream worker, a trainer per online variant, a server per
    variant; started against one set of isolated settings, stopped together."""

    def __init__(self, settings, environment: dict, workdir: Path):
        self.settings, self.environment, self.workdir = settings, environment, workdir
        self.children: dict[str, StreamrecProcess] = {}
        self.ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}

    def _child(self, name: str, args: list[str], variables: dict) -> StreamrecProcess:
        child = StreamrecProcess(
            args, {**self.environment, **variables}, self.workdir / f"{name}.log"
        )
        child.start()
        self.children[name] = child
        return child

    def start_worker(self) -> None:
        worker = StreamWorker(self.settings, self.environment, self.workdir / "worker.log")
        worker.start()
        self.children["worker"] = worker

    def start_trainer(self, name: str, family: str, group: str) -> None:
        self.metrics_ports[name] = free_port()
        self._child(
            f"trainer-{name}",
            ["worker", "trainer"],
            {
                "STREAMREC_RECOMMENDER__FAMILY": family,
                "STREAMREC_WORKERS__TRAINER_GROUP": group,
                "STREAMREC_OPS__WORKER_METRICS_PORT": str(self.metrics_ports[name]),
                "OMP_NUM_THREADS": "1",  # one core per trainer
            },
        )

    def start_server(self, variant: str) -> None:
        self.ports[variant] = free_port()
        self._child(
            f"serve-{variant}",
            ["serve", "--port", str(self.ports[variant])],
            {"STREAMREC_RECOMMENDER__FAMILY": family_of(variant)},
        )

    def wait_served(self, variant: str, timeout_s: float = 300) -> None:
        with RecommenderClient(f"127.0.0.1:{self.ports[variant]}") as client:

            def answers() -> bool:
                try:
                    return bool(client.recommend(history=[1], k=1, timeout_s=5).model_version)
                except Exception:
                    return False

            wait_for(answers, timeout_s, f"{variant}'s server", self.children[f"serve-{variant}"])

    def wait_trainer(self, name: str, timeout_s: float = 300) -> None:
        """Until the trainer has warm-started and joined its group (a few seconds more)."""
        child = self.children[f"trainer-{name}"]
        wait_for(lambda: "warm start from" in child.log(), timeout_s, f"trainer {name}", child)
        time.sleep(5)

    def cpu_seconds(self, name: str) -> float | None:
        child = self.children.get(name)
        if child is None or not child.running():
            return None
        times = psutil.Process(child.process.pid).cpu_times()
        return round(times.user + times.system, 2)

    def stop(self, *names: str) -> None:
        for name in names or list(self.children):
            child = self.children.get(name)
            if child is not None:
                child.stop()


def split_index(dataset) -> int:
    """The first interaction at or after the median timestamp (time order: the dataset's,
    which is the protocol's time key order)."""
    median = float(np.median(dataset.timestamps))
    return int(np.searchsorted(dataset.timestamps, median, side="left"))


def trainer_versions(settings, family: str) -> list:
    """(created ms, {partition: next offset}) of the versions the online trainer
    published, oldest first (not the initial one, nor the knowledge job's)."""
    topic = settings.kafka.training_examples_topic
    found = []
    for version in ModelRegistry.from_settings(settings).versions(family):
        offsets = (version.metadata.get("kafka_offsets") or {}).get(topic)
        if offsets and version.metadata.get("source") == "online-trainer":
            saved = {int(p): int(o) for p, o in offsets.items()}
            found.append((int(version.metadata["created_at_ms"]), saved))
    return found


def model_freshness(settings, replay: Replay, topic: ExamplesTopic, family: str) -> dict:
    """Event -> first published version whose saved offsets include its example; the
    interval between the trainer's versions."""
    versions = trainer_versions(settings, family)
    with_example = [
        (i, topic.position[f"{DATASET}:{replay.split + i}"])
        for i in range(len(replay.events))
        if f"{DATASET}:{replay.split + i}" in topic.position
    ]
    made = first_version_times([position for _, position in with_example], versions)
    latencies = [
        (created - int(replay.sent_ms[i])) / 1000
        for (i, _), created in zip(with_example, made, strict=True)
        if created is not None
    ]
    intervals = np.diff([created for created, _ in versions]) / 1000
    return {
        "event_to_model": latency_summary(
            latencies, missing=sum(created is None for created in made)
        ),
        "events_without_example": len(replay.events) - len(with_example),
        "versions": len(versions),
        "version_interval_p50_s": round(float(np.median(intervals)), 2) if len(intervals) else None,
        "version_interval_mean_s": round(float(np.mean(intervals)), 2) if len(intervals) else None,
        "version_interval_max_s": round(float(np.max(intervals)), 2) if len(intervals) else None,
    }


def settle(settings, topic: ExamplesTopic, timeout_s: float) -> float:
    """Wait for each online trainer's latest version to include every example (or the
    timeout); the seconds waited."""
    started = time.perf_counter()
    ends: dict[int, int] = {}
    for partition, offset in topic.position.values():
        ends[partition] = max(ends.get(partition, -1), offset + 1)

    def covered() -> bool:
        for variant in TRAINED_ONLINE:
            versions = trainer_versions(settings, family_of(variant))
            saved = versions[-1][1] if versions else {}
            if any(saved.get(p, 0) < end for p, end in ends.items()):
                return False
        return True

    while not covered() and time.perf_counter() - started < timeout_s:
        time.sleep(1)
    return round(time.perf_counter() - started, 1)


def trainer_capacity(system: LiveSystem, args) -> dict:
    """A fresh trainer (its own group and family, warm-started from the initial model)
    draining the replayed `training-examples` with nothing else of the run going: its
    examples trained, and absorbed (trained + held out), per second, from its first
    examples until it has drained the topic or `--capacity-s` has passed."""
    family = family_of("capacity")  # the initial model was published there too
    system.start_trainer("capacity", family, f"capacity-{family}")
    port = system.metrics_ports["capacity"]
    child = system.children["trainer-capacity"]
    absorbed_uses = ("trained", "held_out", "skipped")

    def sample() -> tuple[float, float, float] | None:
        counts = absorbed_examples(port) or {}
        absorbed = sum(v for use, v in counts.items() if use in absorbed_uses)
        return (time.perf_counter(), counts.get("trained", 0.0), absorbed) if absorbed else None

    samples = [wait_for(sample, 300, "the capacity trainer's first examples", child)]
    while time.perf_counter() - samples[0][0] < args.capacity_s:
        time.sleep(0.5)
        samples.append(sample() or samples[-1])
    system.stop("trainer-capacity")
    # Up to the last sample that moved: a drained topic leaves the trainer idle after.
    last = max(range(len(samples)), key=lambda n: (samples[n][2], -n))
    (t0, trained0, absorbed0), (t1, trained1, absorbed1) = samples[0], samples[last]
    seconds = max(t1 - t0, 1e-9)
    return {
        "examples_per_s": round((trained1 - trained0) / seconds, 1),
        "absorbed_per_s": round((absorbed1 - absorbed0) / seconds, 1),
        "seconds": round(seconds, 1),
        "examples_absorbed": int(absorbed1 - absorbed0),
        "torch_threads": 1,
    }


def main() -> None:
    options = parser("online", __doc__)
    options.add_argument("--day-seconds", type=float, default=8.0, help="Wall s per sim day.")
    options.add_argument("--tick-minutes", type=float, default=120.0, help="Simulated minutes.")
    options.add_argument("--days", type=float, default=0, help="Replay only so many days.")
    options.add_argument("--epochs", type=int, default=12, help="Offline training's cap.")
    options.add_argument("--patience", type=int, default=2)
    options.add_argument("--publish-every-s", type=float, default=15.0)
    options.add_argument("--sample-every", type=int, default=10, help="History probe share.")
    options.add_argument("--concurrency", type=int, default=16, help="gRPC asks in flight.")
    options.add_argument("--history-timeout-s", type=float, default=10.0)
    options.add_argument("--capacity-s", type=float, default=60.0)
    options.add_argument("--settle-s", type=float, default=120.0)
    options.add_argument(
        "--quick", action="store_true", help="A few minutes: 6 days, 2 epochs, short waits."
    )
    args = options.parse_args()
    if args.quick:
        args.days, args.epochs, args.patience = args.days or 6, 2, 1
        args.capacity_s, args.settle_s = min(args.capacity_s, 20), min(args.settle_s, 45)
    configure()  # progress at info, libraries quiet
    use_threads(1)
    dataset = load_dataset(DATASET)
    split = split_index(dataset)
    run_settings = {
        **RUN_SETTINGS,
        "STREAMREC_WORKERS__TRAINER_PUBLISH_EVERY_S": str(args.publish_every_s),
    }
    with local_services("streamrec-online-") as (workdir, launcher):
        settings, environment = isolated_settings(launcher, **run_settings)
        report = run(settings, environment, workdir, dataset, split, args)
    path = write_result(args.json, report)
    plot_weeks(report["variants"], path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")


def preload(settings, records, split: int, timeout_s: float = 900) -> dict[int, int]:
    """The events before the split through the stream plane, untimed: the histories the
    server reads and the user sequences the stream worker extends. Returns the end
    offsets of `training-examples` once every row is stored and the topic has settled:
    the trainers start from there (the initial models have learnt those examples)."""
    with InteractionProducer.from_settings(settings) as producer:
        for index in range(split):
            producer.send_event(replayed_event(DATASET, index, records[index], now_ms()))
    client = connect(settings)
    try:
        wait_for(
            lambda: client.execute("SELECT count() FROM interactions")[0][0] >= split,
            timeout_s,
            "the events before the split to be stored",
        )
    finally:
        client.disconnect()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap(settings), enable_auto_commit=False)
    topic = settings.kafka.training_examples_topic
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends, stable_since = {}, time.perf_counter()
    while time.perf_counter() - stable_since < 3:
        now = {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
        if now != ends:
            ends, stable_since = now, time.perf_counter()
        time.sleep(0.5)
    consumer.close()
    return ends


def run(settings, environment, workdir: Path, dataset, split: int, args) -> dict:
    system = LiveSystem(settings, environment, workdir)
    system.start_worker()
    for variant in VARIANTS:  # each loads its first version once it is published
        system.start_server(variant)
    try:
        log.info("the %d events before the split through the stream worker", split)
        offsets = preload(settings, dataset.interaction_records(), split)
        return measure(settings, system, workdir, dataset, split, args, offsets)
    finally:
        system.stop()


def measure(settings, system, workdir: Path, dataset, split: int, args, offsets) -> dict:
    log.info("training the initial models on the %d events before the split", split)
    saved = {"kafka_offsets": {settings.kafka.training_examples_topic: offsets}}
    families = [family_of(v) for v in ("static", "online", "daily_retrain", "capacity")]
    initial = train_and_publish(
        settings, dataset, split, families, args.epochs, args.patience, extra=saved
    )
    system.start_trainer("online", family_of("online"), f"trainer-{family_of('online')}")
    knowledge = catalog_knowledge(settings, dataset, workdir / "knowledge")
    initial_knowledge = train_and_publish(
        settings,
        dataset,
        split,
        [family_of("online_knowledge")],
        args.epochs,
        args.patience,
        knowledge_folder=workdir / "knowledge",
        extra=saved,
    )
    added = add_new_items(settings, family_of("online_knowledge"), knowledge["prompt_version"])
    group = f"trainer-{family_of('online_knowledge')}"
    system.start_trainer("online_knowledge", family_of("online_knowledge"), group)
    probes, topic = HistoryProbes(settings, 1000), ExamplesTopic(settings, offsets)
    lag = None
    retrain = DailyRetrain(
        settings, dataset, split, family_of("daily_retrain"), args.epochs, args.patience
    )
    try:
        for variant in VARIANTS:
            system.wait_served(variant)
        for variant in TRAINED_ONLINE:
            system.wait_trainer(variant)
        probes.start()
        topic.start()
        lag = TrainerLag({v: system.metrics_ports[v] for v in TRAINED_ONLINE}, topic)
        lag.start()
        retrain.start()
        replay = Replay(settings, system, dataset, split, args, (probes, topic))
        cpu_before = {v: system.cpu_seconds(f"trainer-{v}") for v in TRAINED_ONLINE}
        log.info("replaying %d events", len(replay.events))
        replayed = replay.run(retrain)
        retrain.stop(timeout_s=300)  # ends after its current epoch
        settled = settle(settings, topic, args.settle_s)
        train_cpu = {
            v: round(system.cpu_seconds(f"trainer-{v}") - cpu_before[v], 1) for v in TRAINED_ONLINE
        }
        probes.stop()
        lag.stop()
        topic.stop()
        replay.close()
        system.stop()
        capacity = trainer_capacity(system, args)
    finally:
        retrain.stop(timeout_s=1)
    asked = replay.asked()
    history, unseen = probes.latencies()
    online_freshness = model_freshness(settings, replay, topic, family_of("online"))
    variants = {v: variant_figures(asked, v) for v in VARIANTS}
    variants["static"]["train_seconds"] = 0.0
    variants["daily_retrain"]["train_seconds"] = round(retrain.cpu_s, 1)
    for variant in TRAINED_ONLINE:
        variants[variant]["train_seconds"] = train_cpu[variant]
    gains = {v: bootstrap_gain(asked, v) for v in VARIANTS if v != "static"}
    freshness = {
        "history_p50_s": latency_summary(history)["p50_s"],
        "history_p99_s": latency_summary(history)["p99_s"],
        "model_p50_s": online_freshness["event_to_model"]["p50_s"],
        "model_p99_s": online_freshness["event_to_model"]["p99_s"],
        "version_interval_p50_s": online_freshness["version_interval_p50_s"],
        "trainer_lag": {v: lag.lag(v) for v in TRAINED_ONLINE},
        "history": latency_summary(history, missing=unseen),
        "online": online_freshness,
        "online_knowledge": model_freshness(settings, replay, topic, family_of("online_knowledge")),
        "settle_seconds": settled,
    }
    report = {
        "benchmark": "online",
        "dataset": DATASET,
        "variants": variants,
        "online_vs_static": gains["online"],
        "vs_static": gains,
        "freshness": freshness,
        "trainer_examples_per_s": capacity["examples_per_s"],
        "trainer_capacity": capacity,
        "replay": replayed,
        "split": {"events_before": split, "timestamp": int(dataset.timestamps[split])},
        "initial_models": {
            "sasrec": initial.__dict__,
            "sasrec_knowledge": initial_knowledge.__dict__,
        },
        "daily_retrain": {
            "retrains": len(retrain.done),
            "day_boundaries": retrain.boundaries,
            "boundaries_merged_into_a_later_retrain": retrain.merged,
            "runs": [r.__dict__ for r in retrain.done],
        },
        "cold_items": {
            "items": int(
                len({r.item_id for r, c in zip(replay.events, replay.cold, strict=True) if c})
            ),
            "events": int(replay.cold.sum()),
            "how_each_variant_gets_them": {
                "static": "never: its item table is the items before the split",
                "online": "table growth: the trainer adds an item when an example first names "
                "it, and a version published after that serves it",
                "daily_retrain": "each retrain's table holds every item seen so far",
                "online_knowledge": "the knowledge job's extend_items added every item new "
                f"since the split ({added}) before the replay, each with its facts channel "
                "from the catalog's facts (title, year, genres) through the text encoder; "
                "the model has no LLM channel",
            },
        },
        "knowledge": knowledge,
        "settings": {
            "day_seconds": args.day_seconds,
            "tick_minutes": args.tick_minutes,
            "days": args.days,
            "epochs": args.epochs,
            "patience": args.patience,
            "publish_every_s": args.publish_every_s,
            "quick": args.quick,
        },
    }
    report["targets"] = check_targets(report)
    return report


if __name__ == "__main__":
    main()
