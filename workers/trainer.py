"""The online trainer: fine-tunes the served recommender on the live stream.

It consumes `training-examples` (TrainingExampleBatch messages from the stream
worker) as the consumer group `workers.trainer_group`, and:

- warm-starts from the latest registry version of `recommender.family`;
- takes up to `trainer_max_poll_messages` records per poll and decodes them in one
  pass (`workers.trainer_examples`);
- holds out a fixed share of examples (chosen by event id, so a restart picks
  the same ones) for the pre-publish check, and trains on the rest in
  micro-batches of `trainer_batch_size` new examples, each user's examples packed
  into one sequence, mixed with examples replayed from a buffer of older ones, at a
  small learning rate, so the model follows the stream without forgetting;
- grows the item tables when an example names an item the model has never
  seen (`workers.trainer_knowledge`: its LLM channel from the `item_knowledge`
  row of the model's LLM and prompt versions, its facts channel from the
  catalog, through the fusion layer);
- every N examples trained or T seconds (a schedule, not every step) puts the
  candidate through the gate (`workers.trainer_gate`: sane held-out scores, no
  NDCG@10 regression beyond the tolerance) and publishes it, or drops it and
  restarts from the published weights. When another job
  (the knowledge job, alignment) has published a newer version meanwhile, the
  trainer continues from that version instead of overwriting it.

The Kafka offsets after the last absorbed message go into the published
version's metadata; a restarted trainer seeks there, so it resumes exactly
where its last version stopped (examples consumed after that are trained
again; a version without offsets, from another job, falls back to the
offsets the group committed at the trainer's last publish). Each publish
cycle, published or rejected, is one `job_runs` row of kind ``trainer``: a
rejected candidate is a failed run whose error says why.
"""

from __future__ import annotations

import copy
import logging
import random
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge

from models.device import resolve_device
from streamrec.jobs import JobRecorder
from streamrec.services import kafka_bootstrap
from streamrec.settings import Settings
from workers.trainer_examples import (
    Example,
    ItemIndex,
    chain_tensors,
    decode_values,
    is_held_out,
    pack,
    replay_chains,
)
from workers.trainer_gate import Decision, heldout_ndcg, rejection
from workers.trainer_knowledge import NewItemKnowledge, inherited_provenance

log = logging.getLogger(__name__)

EXAMPLES = Counter("streamrec_trainer_examples_total", "Examples consumed", ["use"])
EXAMPLES_PER_S = Gauge(
    "streamrec_trainer_examples_per_second", "Examples absorbed per second, over the last seconds"
)
LAG_EXAMPLES = Gauge(
    "streamrec_trainer_lag_examples",
    "Examples on the topic not absorbed yet (records behind times examples per record)",
)
LAG_SECONDS = Gauge(
    "streamrec_trainer_lag_seconds",
    "Now minus the produce time of the newest absorbed record while records wait; else 0",
)
LOSS = Gauge("streamrec_trainer_loss", "Loss of the last micro-batch")
HELDOUT_NDCG = Gauge("streamrec_trainer_heldout_ndcg", "Held-out NDCG@10 of the last candidate")
VERSIONS = Counter("streamrec_trainer_versions_total", "Candidate versions", ["outcome"])
NEW_ITEMS = Counter("streamrec_trainer_new_items_total", "Items added to the model's tables")

# Offsets saved in a version's metadata under this key: {topic: {partition: next offset}}.
OFFSETS_KEY = "kafka_offsets"
# Seconds between updates of the examples/s and lag figures (each asks the broker for
# the partitions' end offsets).
FIGURES_EVERY_S = 2.0


@dataclass
class CycleStats:
    trained: int = 0
    skipped: int = 0
    held_out: int = 0
    steps: int = 0
    # Sequences trained (new examples packed per user, and replayed ones).
    sequences: int = 0
    losses: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class _SeekToCheckpoint(ConsumerRebalanceListener):
    """On assignment, move each partition to the offset saved with the loaded version."""

    def __init__(self, trainer: OnlineTrainer):
        self.trainer = trainer

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        # Where this process stands, not the version's offsets: after a rebalance a
        # partition resumes after what was absorbed since, never absorbs it twice.
        for partition in assigned:
            position = self.trainer.absorbed.get(partition.partition)
            if position is not None:
                self.trainer.consumer.seek(partition, position)


class OnlineTrainer:
    """One trainer process: `run()` until stopped, or `run(max_cycles=n)` in tests."""

    def __init__(self, settings: Settings):
        from streamrec.registry import ModelRegistry

        self.settings = settings
        self.config = settings.workers
        self.topic = settings.kafka.training_examples_topic
        self.family = settings.recommender.family
        self.device = str(resolve_device(self.config.device))
        self.registry = ModelRegistry.from_settings(settings)
        self.consumer: KafkaConsumer | None = None
        self.replay: deque[Example] = deque(maxlen=self.config.trainer_replay_buffer_size)
        self.holdout: deque[Example] = deque(maxlen=self.config.trainer_holdout_size)
        self.pending: list[Example] = []
        # Next offset per partition of everything absorbed (trained or held out).
        self.absorbed: dict[int, int] = {}
        self.saved_offsets: dict[int, int] = {}
        self.rng = random.Random()
        self.model = None
        self.baseline = None
        self.version = None
        self.index_of: dict[int, int] = {}
        self.item_ids: np.ndarray | None = None
        self.items: ItemIndex | None = None
        self.extra: dict = {}
        self.new_items = NewItemKnowledge(settings, self.device)
        # For the lag and rate figures: examples per decoded record, the newest absorbed
        # record's produce time, and the examples/s window's start.
        self.records_decoded = 0
        self.examples_decoded = 0
        self.newest_record_ms = 0
        self.rate_mark = (time.monotonic(), 0)

    # --- model -------------------------------------------------------------

    def load_latest(self, wait: bool = True) -> None:
        """Warm start from the latest version (waiting for one to be published)."""
        from models.sequential import SequentialRecommender

        version = self.registry.latest(self.family)
        while version is None and wait:
            log.info("no %s version in the registry yet; waiting", self.family)
            time.sleep(self.config.trainer_wait_for_model_s)
            version = self.registry.latest(self.family)
        if version is None:
            raise RuntimeError(f"no {self.family} version in the registry to warm-start from")
        loaded = SequentialRecommender.from_pretrained(version.path, device=self.device)
        self.version = version
        self.model = loaded.model.to(self.device)
        self.model.train()
        self.baseline = copy.deepcopy(self.model)
        self.item_ids = np.asarray(loaded.item_ids, dtype=np.int64)
        self.index_of = {int(item): index for index, item in enumerate(self.item_ids) if index}
        self.items = ItemIndex(self.item_ids)
        self.extra = dict(loaded.extra or {})
        offsets = (version.metadata.get(OFFSETS_KEY) or {}).get(self.topic, {})
        self.saved_offsets = {int(partition): int(offset) for partition, offset in offsets.items()}
        self.absorbed = dict(self.saved_offsets)
        self._new_optimizer()
        log.info(
            "warm start from %s/%s (%d items)", self.family, version.version, len(self.item_ids)
        )

    def _new_optimizer(self) -> None:
        # foreach: one kernel per step for all the parameters, not one per tensor (a step
        # of the small micro-batches is cheap enough for that to show).
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.config.trainer_learning_rate, foreach=True
        )

    def grow_items(self, external_ids: list[int]) -> None:
        """Add never-seen items to the model (and to the baseline it is checked against),
        each channel's rows from `workers.trainer_knowledge`."""
        knowledge, facts = self.new_items.rows(
            external_ids,
            self.model.knowledge_dim,
            self.model.facts_dim,
            {**self.extra, **(self.version.metadata if self.version else {})},
        )
        for model in (self.model, self.baseline):
            model.extend_items(
                len(external_ids),
                None if knowledge is None else knowledge.clone(),
                None if facts is None else facts.clone(),
            )
            model.to(self.device)
        start = len(self.item_ids)
        self.item_ids = np.concatenate([self.item_ids, np.asarray(external_ids, dtype=np.int64)])
        for offset, item in enumerate(external_ids):
            self.index_of[item] = start + offset
        self.items = ItemIndex(self.item_ids)
        NEW_ITEMS.inc(len(external_ids))
        self._new_optimizer()
        log.info("added %d new items (now %d)", len(external_ids), len(self.item_ids))

    def rebase_if_superseded(self) -> str | None:
        """Continue from a newer version another job published (the knowledge job's new
        item vectors, an alignment run), instead of overwriting it with this candidate.

        The consumer keeps its position; buffered examples are re-indexed to the new
        version's items (items only this trainer knew are grown on it again).
        """
        latest = self.registry.latest(self.family)
        if latest is None or latest.version == self.version.version:
            return None
        old_ids, absorbed = self.item_ids, dict(self.absorbed)
        self.load_latest(wait=False)
        self.absorbed = absorbed
        missing = [int(item) for item in old_ids[1:] if int(item) not in self.index_of]
        if missing:
            self.grow_items(missing)
        new_index = [0, *(self.index_of[int(item)] for item in old_ids[1:])]

        def remap(example: Example) -> Example:
            return Example(
                [new_index[i] for i in example.history], new_index[example.target], example.user
            )

        for buffer in (self.replay, self.holdout):
            kept = [remap(example) for example in buffer]
            buffer.clear()
            buffer.extend(kept)
        self.pending = [remap(example) for example in self.pending]
        log.info("rebased on %s, published by another job", latest.version)
        return latest.version

    # --- stream ------------------------------------------------------------

    def connect(self) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap(self.settings),
            group_id=self.config.trainer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.config.trainer_max_poll_messages,
            # kafka-python checks each batch's CRC-32C in pure Python: a sixth of the
            # trainer's time when profiled. The broker checked it when the batch came in.
            check_crcs=False,
        )
        # The topic's metadata before joining: a group leader without it assigns nothing,
        # warns, and rebalances once the metadata arrives.
        self.consumer.partitions_for_topic(self.topic)
        self.consumer.subscribe([self.topic], listener=_SeekToCheckpoint(self))

    def absorb(self, message, stats: CycleStats) -> None:
        """One record of `training-examples` (see `absorb_batch`)."""
        self.absorb_batch([message], stats)

    def absorb_batch(self, messages: list, stats: CycleStats) -> None:
        """A poll's records of `training-examples`, decoded together: their examples mapped
        to indices (the item tables grown for items never seen), some held out, the rest
        queued; their offsets count as absorbed. An undecodable record is skipped with a
        warning, so the partition moves on."""
        if not messages:
            return
        for message in messages:
            self.absorbed[message.partition] = message.offset + 1
        self.newest_record_ms = max(self.newest_record_ms, *(m.timestamp for m in messages))
        wire, undecodable = decode_values([message.value for message in messages])
        for position in undecodable:
            message = messages[position]
            log.warning(
                "skipped an undecodable record at %s[%d]@%d",
                message.topic,
                message.partition,
                message.offset,
            )
            EXAMPLES.labels("undecodable").inc()
        self.records_decoded += len(messages) - len(undecodable)
        self.examples_decoded += len(wire)
        unseen = self.items.unseen(wire.items + wire.targets)
        if unseen:
            self.grow_items(unseen)
        items = self.items.lookup(wire.items).tolist()
        targets = self.items.lookup(wire.targets).tolist()
        starts = wire.starts().tolist()
        fraction = self.config.trainer_holdout_fraction
        held_out = skipped = 0
        for n, event_id in enumerate(wire.event_ids):
            if starts[n] == starts[n + 1]:
                skipped += 1
                continue
            example = Example(items[starts[n] : starts[n + 1]], targets[n], wire.users[n])
            if is_held_out(event_id, fraction):
                self.holdout.append(example)
                held_out += 1
            else:
                self.pending.append(example)
        stats.skipped += skipped
        stats.held_out += held_out
        EXAMPLES.labels("skipped").inc(skipped)
        EXAMPLES.labels("held_out").inc(held_out)

    def step(self, stats: CycleStats, fresh: list[Example] | None = None) -> None:
        """One optimiser step on `fresh` (default: everything pending), each user's examples
        packed into one sequence, plus about `trainer_replay_ratio` replayed older targets
        per new one."""
        if fresh is None:
            fresh, self.pending = self.pending, []
        max_len = self.config.trainer_max_history
        chains = pack(fresh, max_len)
        want = int(len(fresh) * self.config.trainer_replay_ratio)
        chains += replay_chains(self.replay, want, max_len, self.rng)
        seqs, lens, targets = chain_tensors(chains, max_len, self.device)
        self.optimizer.zero_grad()
        loss = self.model.loss(seqs, lens, targets)
        loss.backward()
        self.optimizer.step()
        self.replay.extend(fresh)
        stats.trained += len(fresh)
        stats.steps += 1
        stats.sequences += len(chains)
        stats.losses.append(loss.item())
        LOSS.set(stats.losses[-1])
        EXAMPLES.labels("trained").inc(len(fresh))

    def update_figures(self) -> None:
        """Examples/s since the last update, and the lag behind the topic's end (the end
        offsets asked from the broker: what the last fetch saw may be older)."""
        now = time.monotonic()
        since, counted = self.rate_mark
        if now > since:
            EXAMPLES_PER_S.set((self.examples_decoded - counted) / (now - since))
        self.rate_mark = (now, self.examples_decoded)
        assigned = list(self.consumer.assignment())
        ends = self.consumer.end_offsets(assigned) if assigned else {}
        behind = sum(max(end - self.consumer.position(tp), 0) for tp, end in ends.items())
        per_record = self.examples_decoded / self.records_decoded if self.records_decoded else 0
        LAG_EXAMPLES.set(behind * per_record)
        waiting = behind and self.newest_record_ms
        LAG_SECONDS.set(max(time.time() - self.newest_record_ms / 1000, 0) if waiting else 0)

    # --- publishing --------------------------------------------------------

    def evaluate_and_publish(self, stats: CycleStats) -> Decision:
        """Held-out check of the candidate against the published model; publish or roll back."""
        from streamrec.registry import VersionMetadata, publish

        if self.pending:
            self.step(stats)
        rebased_on = self.rebase_if_superseded()
        if rebased_on:
            return Decision(False, None, {"examples_trained": stats.trained}, rebased_on)
        held_out = list(self.holdout)
        max_len = self.config.trainer_max_history
        candidate, problem = heldout_ndcg(self.model, held_out, max_len)
        published, _ = heldout_ndcg(self.baseline, held_out, max_len)
        elapsed = time.monotonic() - stats.started
        metrics = {
            "heldout_ndcg@10": candidate,
            "parent_heldout_ndcg@10": published,
            "heldout_examples": len(held_out),
            "loss": float(np.mean(stats.losses)) if stats.losses else None,
            "examples_trained": stats.trained,
            "steps": stats.steps,
            "sequences": stats.sequences,
            "examples_per_s": stats.trained / elapsed if elapsed > 0 else 0.0,
        }
        HELDOUT_NDCG.set(candidate)
        EXAMPLES_PER_S.set(metrics["examples_per_s"])
        reason = rejection(candidate, published, problem, self.config.trainer_regression_tolerance)
        if reason:
            VERSIONS.labels("rejected").inc()
            log.warning("%s", reason)
            self.model = copy.deepcopy(self.baseline)
            self.model.train()
            self._new_optimizer()
            return Decision(False, None, metrics, reason=reason)
        offsets = {self.topic: {str(p): o for p, o in sorted(self.absorbed.items())}}

        def commit_offsets(_version) -> None:
            # The group's offsets are the version's before anybody hears of the version.
            self.saved_offsets = {int(p): o for p, o in offsets[self.topic].items()}
            self.consumer.commit(
                {
                    TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                    for p, o in self.saved_offsets.items()
                }
            )

        with tempfile.TemporaryDirectory(prefix="trainer-") as folder:
            self.model.save_pretrained(Path(folder), self.item_ids, extra=self.extra)
            version = publish(
                self.settings,
                self.family,
                Path(folder),
                VersionMetadata(
                    metrics=metrics,
                    parent=self.version.version,
                    llm_version=self.version.metadata.get("llm_version"),
                    adapter_version=self.version.metadata.get("adapter_version"),
                    extra={
                        "source": "online-trainer",
                        OFFSETS_KEY: offsets,
                        **inherited_provenance(self.version.metadata),
                    },
                ),
                before_announce=commit_offsets,
            )
        self.version = version
        self.baseline = copy.deepcopy(self.model)
        VERSIONS.labels("published").inc()
        log.info(
            "published %s/%s (held-out NDCG@10 %.4f)", version.family, version.version, candidate
        )
        return Decision(True, version.version, metrics)

    # --- loop --------------------------------------------------------------

    def cycle(self, stop) -> Decision | None:
        """Consume and train until a publish is due; then check and publish (one job run)."""
        stats = CycleStats()
        llm_version = (self.version.metadata.get("llm_version") or "") if self.version else ""
        with JobRecorder(self.settings, "trainer", llm_version=llm_version) as run:

            def report() -> None:
                """Counts so far into the run (its row shows them at each heartbeat)."""
                run.progress(ok=stats.trained - run.ok, skipped=stats.skipped - run.skipped)

            size = self.config.trainer_batch_size
            while not stop():
                report()
                records = self.consumer.poll(
                    timeout_ms=self.config.trainer_poll_timeout_ms,
                    max_records=self.config.trainer_max_poll_messages,
                )
                self.absorb_batch([m for messages in records.values() for m in messages], stats)
                while len(self.pending) >= size:
                    fresh, self.pending = self.pending[:size], self.pending[size:]
                    self.step(stats, fresh)
                if not records and self.pending:
                    self.step(stats)  # caught up: train what there is now
                report()
                if time.monotonic() - self.rate_mark[0] >= FIGURES_EVERY_S:
                    self.update_figures()
                if self._publish_due(stats):
                    break
            if stop() or (stats.trained == 0 and not self.pending):
                # Stopping: no publish; a restart trains on these examples again.
                report()
                return None
            if len(self.holdout) < self.config.trainer_min_holdout:
                log.info(
                    "only %d held-out examples: training on, publishing later", len(self.holdout)
                )
                report()
                return None
            decision = self.evaluate_and_publish(stats)
            report()
            if decision.reason:
                run.fail(decision.reason)
            return decision

    def _publish_due(self, stats: CycleStats) -> bool:
        return stats.trained >= self.config.trainer_publish_every_examples or (
            stats.trained > 0
            and time.monotonic() - stats.started >= self.config.trainer_publish_every_s
        )

    def run(self, max_cycles: int | None = None, stop=lambda: False) -> list[Decision | None]:
        if self.model is None:
            self.load_latest()
        if self.consumer is None:
            self.connect()
        decisions = []
        while not stop() and (max_cycles is None or len(decisions) < max_cycles):
            decisions.append(self.cycle(stop))
        return decisions

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None
