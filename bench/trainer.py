"""Online trainer throughput: ml-100k training examples from a real Kafka topic, trained on.

    python -m bench.trainer --json bench/results/trainer.json [--examples N]
        [--first-model-epochs 1] [--profile OUT.pstats]

Kafka and ClickHouse are started in a temporary folder. The first model `streamrec up`
trains (the default SASRec, `--first-model-epochs` of offline training) is published;
then the ml-100k interactions in time order go through the stream worker's own sequence
logic (`streams.sequences.apply_events`) into training examples, which are produced onto
the `training-examples` topic as the stream worker writes them (`examples_per_message`
per message, a user's examples on one partition). The online trainer (`OnlineTrainer`,
the trainer settings' defaults) then runs in this process on one torch thread until it
has absorbed them all. Its steady-state rate is counted from its first absorbed example
to its last: polling, decoding, training, the scheduled held-out checks and publishes.
`--profile` writes a cProfile of that run.
"""

from __future__ import annotations

import cProfile
import json
import logging
import pstats
import resource
import time
from dataclasses import dataclass

import torch
from kafka import KafkaProducer
from prometheus_client import REGISTRY

from bench.common import isolated_settings, local_services, log_progress, parser
from bench.results import write_result
from streamrec.datasets import load_dataset
from streamrec.settings import Settings
from streamrec.v1 import events_pb2
from streams.sequences import apply_events

log = logging.getLogger("bench.trainer")
USES = ("trained", "held_out", "skipped")


def dataset_examples(dataset, max_length: int) -> list[events_pb2.TrainingExample]:
    """The examples the stream worker makes of the dataset's interactions in time order."""
    records = sorted(dataset.interaction_records(), key=lambda record: record.timestamp)
    sequences: dict[int, dict] = {}
    examples = []
    for offset, record in enumerate(records):
        event = events_pb2.InteractionEvent(
            event_id=f"{dataset.name}-{offset}",
            user_id=record.user_id,
            item_id=record.item_id,
            event_type=events_pb2.EVENT_TYPE_RATING,
            timestamp_ms=record.timestamp * 1000,
        )
        sequences[record.user_id], made = apply_events(
            sequences.get(record.user_id), [(offset, event)], max_length
        )
        examples.extend(made)
    return examples


def produce_examples(settings: Settings, examples: list) -> int:
    """`examples` onto the training-examples topic, `examples_per_message` per message and
    each user's on one partition, as the stream worker writes them; returns the messages."""
    per_message = settings.streams.examples_per_message
    partitions = settings.kafka.partitions
    by_partition: dict[int, list] = {}
    for example in examples:
        by_partition.setdefault(example.user_id % partitions, []).append(example)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=20, acks=1
    )
    messages = 0
    for partition, chunk in by_partition.items():
        for start in range(0, len(chunk), per_message):
            batch = events_pb2.TrainingExampleBatch(examples=chunk[start : start + per_message])
            producer.send(
                settings.kafka.training_examples_topic,
                batch.SerializeToString(),
                partition=partition,
            )
            messages += 1
    producer.flush()
    producer.close()
    return messages


def absorbed_examples(trainer) -> float:
    """Examples the trainer has taken off the topic so far: its Prometheus counter, and
    those waiting in its next micro-batch."""
    counts = (
        REGISTRY.get_sample_value("streamrec_trainer_examples_total", {"use": use}) for use in USES
    )
    return sum(count or 0.0 for count in counts) + len(trainer.pending)


@dataclass
class Sample:
    seconds: float
    examples: float
    cpu_seconds: float


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_trainer(settings: Settings, examples: int, timeout_s: float = 1800.0) -> dict:
    """Run `OnlineTrainer` on this process's settings until it has absorbed `examples`
    more examples (or `timeout_s`); its steady-state rate, first absorbed example to last.
    For another bench to reuse on a topic it has filled itself."""
    from workers.trainer import OnlineTrainer

    trainer = OnlineTrainer(settings)
    start = absorbed_examples(trainer)
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout_s

    def stop() -> bool:
        samples.append(
            Sample(time.perf_counter(), absorbed_examples(trainer) - start, cpu_seconds())
        )
        return samples[-1].examples >= examples or time.monotonic() > deadline

    started = time.perf_counter()
    try:
        decisions = trainer.run(stop=stop)
    finally:
        trainer.close()
    moving = [sample for sample in samples if sample.examples > 0]
    first, last = moving[0], moving[-1]
    seconds = last.seconds - first.seconds
    counted = last.examples - first.examples
    cpu = last.cpu_seconds - first.cpu_seconds
    checked = [d for d in decisions if d is not None]
    trained = sum(d.metrics.get("examples_trained", 0) for d in checked)
    sequences = sum(d.metrics.get("sequences", 0) for d in checked)
    return {
        "examples_absorbed": int(last.examples),
        "examples_per_s": round(counted / seconds, 1) if seconds > 0 else None,
        # The rate on a core of its own: the trainer's CPU time, not the shared machine's.
        "examples_per_cpu_second": round(counted / cpu, 1) if cpu > 0 else None,
        "steady_seconds": round(seconds, 2),
        "seconds_to_first_example": round(first.seconds - started, 2),
        "cpu_share_of_one_core": round(cpu / seconds, 2) if seconds > 0 else None,
        "checks": len(checked),
        "versions_published": sum(1 for d in checked if d.published),
        "versions_rejected": sum(1 for d in checked if not d.published and d.reason),
        "examples_per_trained_sequence": round(trained / sequences, 2) if sequences else None,
        "torch_threads": torch.get_num_threads(),
    }


# Where the trainer's time goes: (label, file suffix, function) in a cProfile.
PROFILED = (
    ("train steps (the next three and packing)", "workers/trainer.py", "step"),
    ("forward and loss", "models/sequential/base.py", "loss"),
    ("backward", "", "run_backward"),
    ("optimizer", "torch/optim/adam.py", "adam"),
    ("held-out checks and publishes", "workers/trainer.py", "evaluate_and_publish"),
    ("decoding and absorbing", "workers/trainer.py", "absorb_batch"),
    ("kafka polls", "kafka/consumer/group.py", "poll"),
)


def time_shares(profile: cProfile.Profile) -> dict:
    """Seconds and share of the trainer's run in each part of PROFILED."""
    stats = pstats.Stats(profile).stats
    total = next(
        ct
        for (path, _, name), (_, _, _, ct, _) in stats.items()
        if name == "run" and path.endswith("workers/trainer.py")
    )
    shares = {}
    for label, suffix, function in PROFILED:
        seconds = sum(
            ct
            for (path, _, name), (_, _, _, ct, _) in stats.items()
            if name in (function, f"<method '{function}' of 'torch._C._EngineBase' objects>")
            and path.endswith(suffix)
        )
        shares[label] = {"seconds": round(seconds, 2), "share": round(seconds / total, 3)}
    return {"trainer_run_seconds": round(total, 2), "parts": shares}


def main() -> None:
    options = parser("trainer", __doc__, dataset=True)
    options.add_argument("--examples", type=int, default=0, help="Examples produced (0: all).")
    options.add_argument("--first-model-epochs", type=int, default=1)
    options.add_argument("--profile", default="", help="Write a cProfile of the trainer here.")
    args = options.parse_args()
    log_progress()
    for name in ("kafka", "streamrec.jobs"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(1)

    from workers.recommender_training import train_first_model

    with local_services("streamrec-bench-trainer-") as (_, launcher):
        settings, _ = isolated_settings(launcher, STREAMREC_WORKERS__DEVICE="cpu")
        dataset = load_dataset(args.dataset, settings)
        began = time.perf_counter()
        version = train_first_model(settings, dataset, epochs=args.first_model_epochs)
        first_model_s = time.perf_counter() - began
        log.info("first model %s in %.0f s", version.version, first_model_s)
        examples = dataset_examples(dataset, settings.streams.sequence_length)
        if args.examples:
            examples = examples[: args.examples]
        messages = produce_examples(settings, examples)
        log.info("produced %d examples in %d messages", len(examples), messages)
        torch.set_num_threads(1)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        measured = measure_trainer(settings, len(examples))
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
            measured["profile"] = time_shares(profiler)
        print(json.dumps(measured), flush=True)
    workers = settings.workers
    report = {
        "benchmark": "trainer",
        "dataset": args.dataset,
        "model": "sasrec (the first model's default config)",
        "first_model_epochs": args.first_model_epochs,
        "first_model_seconds": round(first_model_s, 1),
        "examples_produced": len(examples),
        "messages_produced": messages,
        "examples_per_message": settings.streams.examples_per_message,
        "trainer_settings": {
            name: getattr(workers, name)
            for name in type(workers).model_fields
            if name.startswith("trainer_") and name != "trainer_group"
        },
        **measured,
        "trainer_examples_per_s": measured["examples_per_s"],
    }
    print(f"wrote {write_result(args.json, report)}")


if __name__ == "__main__":
    main()
