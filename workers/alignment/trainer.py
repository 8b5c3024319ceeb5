"""The trainer of SeRALM's Algorithm 1: one iteration updates Rec and the LLM on a batch.

Per batch of instances (x, y) with sampled knowledge s (from the generator):

- Rec is trained on (x, s, y): cross-entropy of y with the re-sampled items'
  knowledge in its table, so it learns to read the knowledge the LLM writes;
- the LLM is trained with weight p(y|x,s)/p(y|x) on grad log p(s|x) plus alpha
  times the per-token KL to itself with adapters disabled (equations 6-8).

In the asynchronous mode the weight comes from the generator's snapshot of Rec
(as in the paper) and log p(s|x) is recomputed with the live adapters. The
trainer never blocks on the generator after its first batch: when no fresh
batch is queued it trains again on one of the last `replay_batches` batches.
Every `refresh_interval` iterations it sends the generator a new snapshot.
"""

from __future__ import annotations

import copy
import logging
import queue
import random
import time
from dataclasses import dataclass, field

import torch
from prometheus_client import Counter, Gauge

from models.alignment.objective import PolicyWeights, alignment_loss, recommendation_ratio
from models.alignment.policy import PolicyTerms, adapter_state, policy_terms
from models.alignment.recommender import replace_rows, target_log_probs_with_knowledge
from workers.alignment.generator import (
    Experience,
    KnowledgeSampler,
    Snapshot,
    adapter_checksum,
    run_generator,
)

log = logging.getLogger(__name__)

ITERATIONS = Counter("streamrec_alignment_iterations_total", "Alignment iterations", ["mode"])
REUSED = Counter("streamrec_alignment_reused_batches_total", "Batches trained on again")
MEAN_RATIO = Gauge("streamrec_alignment_mean_ratio", "Mean p(y|x,s)/p(y|x) of the last batch")
KL = Gauge("streamrec_alignment_kl", "Mean per-sequence KL to the original LLM, last batch")

MODES = ("async", "sync")


@dataclass
class TrainerConfig:
    iterations: int
    refresh_interval: int
    alpha: float
    baseline: str = "none"
    baseline_decay: float = 0.9
    max_ratio: float | None = None
    llm_learning_rate: float = 1e-4
    rec_learning_rate: float = 1e-3
    queue_batches: int = 4
    replay_batches: int = 8
    threads_per_process: int = 0
    seed: int = 0
    keep_texts: bool = False
    stop_at: float | None = None  # time.monotonic() after which no iteration starts


@dataclass
class IterationRecord:
    iteration: int
    snapshot_version: int
    fresh: bool
    mean_ratio: float
    kl: float
    rec_loss: float
    llm_loss: float = 0.0  # the policy-gradient loss plus alpha * KL
    texts: list[str] = field(default_factory=list)


@dataclass
class AlignmentRun:
    mode: str
    iterations: int
    seconds: float
    records: list[IterationRecord]
    refreshes: list[int]  # iterations after which a snapshot was sent
    refresh_checksums: dict[int, float]  # version -> adapter checksum sent
    batch_checksums: list[tuple[int, float]]  # (version, checksum) of each fresh batch
    reused_batches: int
    waited_s: float  # blocked on the generator after its first batch
    startup_s: float = 0.0  # until the generator's first batch (not in `seconds`)

    @property
    def iterations_per_s(self) -> float:
        return self.iterations / self.seconds if self.seconds else 0.0

    def mean_ratio(self, first: int | None = None, last: int | None = None) -> float:
        records = self.records[:first] if first else self.records[-last:] if last else self.records
        return sum(r.mean_ratio for r in records) / max(len(records), 1)


class AlignmentTrainer:
    def __init__(self, sampler: KnowledgeSampler, config: TrainerConfig):
        self.sampler = sampler
        self.config = config
        self.policy = sampler.policy
        self.recommender = sampler.recommender
        self.weights = PolicyWeights(config.baseline, config.baseline_decay)
        self.llm_optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad], lr=config.llm_learning_rate
        )
        self.rec_optimizer = torch.optim.Adam(
            [p for p in self.recommender.parameters() if p.requires_grad],
            lr=config.rec_learning_rate,
        )

    # -- one iteration ------------------------------------------------------------------

    def step(self, experience: Experience) -> tuple[float, float, float, float]:
        """Update Rec and the LLM on one batch; (mean ratio, mean KL, Rec loss, LLM loss)."""
        task, sampling = self.sampler.task, self.sampler.config
        device = sampling.device
        indices = experience.indices
        item_seq = task.histories[indices].to(device)
        item_seq_len = task.lengths[indices].to(device)
        targets = task.targets[indices].to(device)

        self.recommender.train()
        tables = replace_rows(
            task.knowledge.to(device), experience.items.to(device), experience.vectors.to(device)
        )
        rec_loss = -target_log_probs_with_knowledge(
            self.recommender, tables, item_seq, item_seq_len, targets
        ).mean()
        self.rec_optimizer.zero_grad(set_to_none=True)
        rec_loss.backward()
        self.rec_optimizer.step()

        self.policy.train()
        terms = policy_terms(
            self.policy,
            experience.samples.to(device),
            with_kl=self.config.alpha > 0,
            dtype=sampling.dtype,
        )
        rows = experience.row_instance.to(device)
        batch = len(indices)
        per_instance = PolicyTerms(
            log_prob=torch.zeros(batch, device=device).index_add(0, rows, terms.log_prob),
            kl=torch.zeros(batch, device=device).index_add(0, rows, terms.kl),
            tokens=torch.zeros(batch, device=device).index_add(0, rows, terms.tokens),
        )
        ratios = recommendation_ratio(
            experience.log_p_with, experience.log_p_without, self.config.max_ratio
        ).to(device)
        loss = alignment_loss(per_instance, self.weights(ratios), self.config.alpha)
        self.llm_optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        self.llm_optimizer.step()
        return (
            float(ratios.mean()),
            float(loss.kl.detach()),
            float(rec_loss.detach()),
            float(loss.total.detach()),
        )

    def snapshot(self, version: int) -> Snapshot:
        return Snapshot(
            version=version,
            adapters=adapter_state(self.policy),
            # The knowledge table is no part of a state dict (a non-persistent buffer): the
            # generator keeps the cached one, which never changes.
            recommender={
                name: value.detach().to("cpu", copy=True)
                for name, value in self.recommender.state_dict().items()
            },
        )

    # -- the loops ----------------------------------------------------------------------

    def run(self, mode: str = "async", progress=None) -> AlignmentRun:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if self.config.refresh_interval < 1:
            raise ValueError("refresh_interval must be at least 1")
        return self._run_async(progress) if mode == "async" else self._run_sync(progress)

    def _record(self, iteration, experience, fresh, step_result) -> IterationRecord:
        mean_ratio, kl, rec_loss, llm_loss = step_result
        ITERATIONS.labels(mode="async" if self._async else "sync").inc()
        MEAN_RATIO.set(mean_ratio)
        KL.set(kl)
        return IterationRecord(
            iteration=iteration,
            snapshot_version=experience.snapshot_version,
            fresh=fresh,
            mean_ratio=mean_ratio,
            kl=kl,
            rec_loss=rec_loss,
            llm_loss=llm_loss,
            texts=list(experience.texts) if self.config.keep_texts else [],
        )

    def _out_of_time(self) -> bool:
        return self.config.stop_at is not None and time.monotonic() >= self.config.stop_at

    def _batch_indices(self, rng: random.Random) -> torch.Tensor:
        n = len(self.sampler.task)
        size = self.sampler.config.batch_size
        return torch.tensor([rng.randrange(n) for _ in range(size)], dtype=torch.long)

    def _run_sync(self, progress) -> AlignmentRun:
        """Sample with the live models, then train on it: the generator waits for the trainer
        and the trainer for the generator."""
        self._async = False
        rng = random.Random(self.config.seed)
        torch.manual_seed(self.config.seed)
        records, batch_checksums = [], []
        started = time.perf_counter()
        for iteration in range(1, self.config.iterations + 1):
            if self._out_of_time():
                break
            self.sampler.version = iteration - 1
            experience = self.sampler.sample(self._batch_indices(rng))
            batch_checksums.append((experience.snapshot_version, experience.snapshot_checksum))
            records.append(self._record(iteration, experience, True, self.step(experience)))
            self.sampler.checksum = adapter_checksum(adapter_state(self.policy))
            if progress:
                progress(iteration, records[-1])
        seconds = time.perf_counter() - started
        return AlignmentRun("sync", len(records), seconds, records, [], {}, batch_checksums, 0, 0.0)

    def _run_async(self, progress) -> AlignmentRun:
        self._async = True
        context = torch.multiprocessing.get_context("spawn")
        batches = context.Queue(maxsize=self.config.queue_batches)
        snapshots = context.Queue()
        stop = context.Event()
        # The generator gets its own copies: the trainer's in-place updates must reach it only
        # through snapshots.
        generator_sampler = copy.deepcopy(self.sampler)
        process = context.Process(
            target=run_generator,
            args=(
                generator_sampler,
                batches,
                snapshots,
                stop,
                self.config.seed + 1,
                self.config.threads_per_process,
            ),
            name="streamrec-alignment-generator",
            daemon=True,
        )
        threads_before = torch.get_num_threads()
        if self.config.threads_per_process:
            torch.set_num_threads(self.config.threads_per_process)
        torch.manual_seed(self.config.seed)
        rng = random.Random(self.config.seed)
        process.start()
        del generator_sampler
        records: list[IterationRecord] = []
        refreshes: list[int] = []
        refresh_checksums = {0: adapter_checksum(adapter_state(self.policy))}
        batch_checksums: list[tuple[int, float]] = []
        replay: list[Experience] = []
        reused = 0
        waited = startup = 0.0
        started = time.perf_counter()
        try:
            for iteration in range(1, self.config.iterations + 1):
                if self._out_of_time():
                    break
                fresh = self._take_fresh(batches, block=not replay, process=process)
                if fresh is None:
                    experience = rng.choice(replay)
                    reused += 1
                    REUSED.inc()
                else:
                    experience, seconds_waited = fresh
                    if iteration == 1:
                        # The generator's start (a process, a model load) is not throughput.
                        startup, started = seconds_waited, time.perf_counter()
                    else:
                        waited += seconds_waited
                    batch_checksums.append(
                        (experience.snapshot_version, experience.snapshot_checksum)
                    )
                    replay = (replay + [experience])[-self.config.replay_batches :]
                records.append(
                    self._record(iteration, experience, fresh is not None, self.step(experience))
                )
                if iteration % self.config.refresh_interval == 0:
                    snapshot = self.snapshot(iteration)
                    snapshots.put(snapshot)
                    refreshes.append(iteration)
                    refresh_checksums[iteration] = snapshot.checksum
                if progress:
                    progress(iteration, records[-1])
            seconds = time.perf_counter() - started
        finally:
            torch.set_num_threads(threads_before)
            stop.set()
            _drain(batches)
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
        return AlignmentRun(
            "async",
            len(records),
            seconds,
            records,
            refreshes,
            refresh_checksums,
            batch_checksums,
            reused,
            waited,
            startup,
        )

    @staticmethod
    def _take_fresh(batches, block: bool, process) -> tuple[Experience, float] | None:
        """The next queued batch, waiting only when there is nothing to reuse yet."""
        started = time.perf_counter()
        while True:
            try:
                experience = batches.get(timeout=0.5) if block else batches.get_nowait()
            except queue.Empty:
                if not block:
                    return None
                if not process.is_alive():
                    raise RuntimeError(
                        f"the alignment generator exited with code {process.exitcode}"
                    ) from None
                continue
            if experience is None:
                raise RuntimeError("the alignment generator failed; see its log")
            return experience, time.perf_counter() - started


def _drain(batches) -> None:
    """Empty the queue so the generator's feeder thread can exit."""
    while True:
        try:
            batches.get(timeout=0.1)
        except (queue.Empty, EOFError, OSError):
            return
