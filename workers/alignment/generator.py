"""The generator of SeRALM's asynchronous training (paper figure 4).

It samples knowledge for training instances with a *snapshot* of the aligned
LLM's adapters and of the knowledge-enhanced recommender Rec, encodes it, and
computes p(y|x,s) (with the snapshot Rec) and p(y|x) (with the frozen Rec_f).
The trainer refreshes the snapshot every `refresh_interval` iterations and
never waits for it: sampling is most of an iteration's cost, so running it in
its own process lets the trainer's backward passes overlap with it.

`KnowledgeSampler` is the sampling step itself; the synchronous mode calls it
in the trainer's process on the live models, `run_generator` runs it in a
child process on copies.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from models.alignment.policy import (
    KnowledgeSamples,
    adapter_state,
    autocast,
    load_adapter_state,
    sample_knowledge,
)
from models.alignment.recommender import (
    replace_rows,
    target_log_probs,
    target_log_probs_with_knowledge,
)
from models.alignment.resampling import resampled_items

log = logging.getLogger(__name__)


@dataclass
class AlignmentTask:
    """The training instances and what generation needs about each item (picklable)."""

    histories: torch.Tensor  # (n, L) left-aligned, 0-padded inner item ids
    lengths: torch.Tensor  # (n,)
    targets: torch.Tensor  # (n,)
    prompts: list[str]  # per inner item id, chat-formatted; [0] unused
    knowledge: torch.Tensor  # (n_items, K) the cached knowledge table
    resample: str = "last_item"
    k_items: int = 1

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class SamplingConfig:
    batch_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    device: str = "cpu"
    dtype: torch.dtype = torch.float32


@dataclass
class Snapshot:
    """What the trainer sends: the LoRA tensors and Rec's state at iteration `version`."""

    version: int
    adapters: dict[str, torch.Tensor]
    recommender: dict[str, torch.Tensor]

    @property
    def checksum(self) -> float:
        return adapter_checksum(self.adapters)


def adapter_checksum(adapters: dict[str, torch.Tensor]) -> float:
    """A fingerprint of adapter values, to check which snapshot produced a batch."""
    return float(sum(t.double().abs().sum() for t in adapters.values()))


@dataclass
class Experience:
    """One batch of sampled knowledge with the recommender's verdict on it."""

    indices: torch.Tensor  # (B,) rows of the task
    items: torch.Tensor  # (B, slots) re-sampled item ids, 0 = empty slot
    row_instance: torch.Tensor  # (R,) the instance of each sampled text
    samples: KnowledgeSamples  # R sampled texts
    vectors: torch.Tensor  # (B, slots, K) their encodings (zeros in empty slots)
    log_p_with: torch.Tensor  # (B,) log p(y|x,s), Rec (snapshot)
    log_p_without: torch.Tensor  # (B,) log p(y|x), Rec_f
    texts: list[str]
    snapshot_version: int = 0
    snapshot_checksum: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class KnowledgeSampler:
    """Sample knowledge for a batch of instances and score it with Rec and Rec_f."""

    def __init__(
        self,
        policy,
        tokenizer,
        recommender: torch.nn.Module,
        frozen_recommender: torch.nn.Module,
        encode: Callable[[list[str]], np.ndarray],
        document_of: Callable[[int, str], str],
        task: AlignmentTask,
        config: SamplingConfig,
    ):
        self.policy = policy
        self.tokenizer = tokenizer
        self.recommender = recommender
        self.frozen_recommender = frozen_recommender
        self.encode = encode
        self.document_of = document_of
        self.task = task
        self.config = config
        self.version = 0
        self.checksum = adapter_checksum(adapter_state(policy))

    def load(self, snapshot: Snapshot) -> None:
        load_adapter_state(self.policy, snapshot.adapters)
        self.recommender.load_state_dict(snapshot.recommender, strict=False)
        self.version = snapshot.version
        self.checksum = snapshot.checksum

    @torch.no_grad()
    def sample(self, indices: torch.Tensor) -> Experience:
        import time

        started = time.perf_counter()
        task, config = self.task, self.config
        device = config.device
        item_seq = task.histories[indices].to(device)
        item_seq_len = task.lengths[indices].to(device)
        targets = task.targets[indices].to(device)
        items = resampled_items(item_seq, item_seq_len, targets, task.resample, task.k_items)
        used = items > 0
        row_instance = used.nonzero()[:, 0]
        prompts = [task.prompts[item] for item in items[used].tolist()]
        samples = sample_knowledge(
            self.policy,
            self.tokenizer,
            prompts,
            config.max_new_tokens,
            config.temperature,
            config.top_p,
            device=device,
            dtype=config.dtype,
        )
        documents = [
            self.document_of(item, text)
            for item, text in zip(items[used].tolist(), samples.texts, strict=True)
        ]
        encoded = torch.as_tensor(self.encode(documents))
        vectors = torch.zeros(*items.shape, task.knowledge.shape[1], device=device)
        vectors[used] = encoded.to(device=device, dtype=vectors.dtype)
        tables = replace_rows(task.knowledge.to(device), items, vectors)
        self.recommender.eval()
        with autocast(device, config.dtype):
            log_p_with = target_log_probs_with_knowledge(
                self.recommender, tables, item_seq, item_seq_len, targets
            )
            log_p_without = target_log_probs(
                self.frozen_recommender, item_seq, item_seq_len, targets
            )
        return Experience(
            indices=indices.cpu(),
            items=items.cpu(),
            row_instance=row_instance.cpu(),
            samples=samples.to("cpu"),
            vectors=vectors.cpu(),
            log_p_with=log_p_with.float().cpu(),
            log_p_without=log_p_without.float().cpu(),
            texts=samples.texts,
            snapshot_version=self.version,
            snapshot_checksum=self.checksum,
            seconds=time.perf_counter() - started,
        )


def _latest_snapshot(snapshots) -> Snapshot | None:
    """Drain the snapshot queue: only the newest matters."""
    latest = None
    while True:
        try:
            latest = snapshots.get_nowait()
        except queue.Empty:
            return latest


def run_generator(
    sampler: KnowledgeSampler,
    batches,
    snapshots,
    stop,
    seed: int,
    threads: int = 0,
) -> None:
    """The generator process: sample with the latest snapshot, forever, until `stop` is set.

    The queue of batches is bounded, so a fast generator runs at most that many
    batches ahead of the trainer and then waits (the trainer never does).
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sampler.policy.eval()
    try:
        while not stop.is_set():
            snapshot = _latest_snapshot(snapshots)
            if snapshot is not None:
                sampler.load(snapshot)
            indices = torch.as_tensor(
                rng.integers(0, len(sampler.task), sampler.config.batch_size), dtype=torch.long
            )
            experience = sampler.sample(indices)
            while not stop.is_set():
                try:
                    batches.put(experience, timeout=0.2)
                    break
                except queue.Full:
                    continue
    except Exception:
        log.exception("the alignment generator failed")
        batches.put(None)  # tells the trainer to stop with an error
        raise
