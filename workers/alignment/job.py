"""The alignment job on a dataset: data, recommenders, LLM, Algorithm 1, evaluation, outputs.

`streamrec align --dataset ml-100k` and `bench/alignment.py` both run through
here. The pieces, in order:

1. the training split becomes the alignment task; the cached knowledge (from
   the not-aligned LLM, contract 2) becomes the knowledge table;
2. Rec_f (no knowledge, frozen) and Rec (with knowledge) come from checkpoint
   folders (contract 1) or are trained here as `streamrec train` trains them
   (`workers.alignment.data`);
3. the LLM gets LoRA adapters; Algorithm 1 runs (async or sync);
4. the knowledge of the items the evaluation needs (`evaluation_items`) is
   regenerated with the aligned LLM (greedy, with the knowledge engineer's prompt and
   parser), and Rec is evaluated on it under the project's protocol (full ranking, every
   earlier item of the user masked: `models.training.evaluate` on `protocol_data`'s
   test task);
5. outputs: the adapter (`save_pretrained`) and the aligned Rec as registry
   versions (`llm-adapter`, `recommender.family`; `workers.alignment.publish`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.alignment.policy import attach_lora
from models.alignment.resampling import resampled_items
from models.device import resolve_device, resolve_dtype
from workers.alignment.data import (
    DocumentOf,
    Encoder,
    chat_prompts,
    item_infos,
    pretrained_recommender,
    sample_rows,
    split_tensors,
)
from workers.alignment.generator import AlignmentTask, KnowledgeSampler, SamplingConfig
from workers.alignment.trainer import AlignmentRun, AlignmentTrainer, TrainerConfig
from workers.recommender_training import ProtocolData

log = logging.getLogger(__name__)


# -- devices -------------------------------------------------------------------------------


def evaluate(model: torch.nn.Module, task, users: int = 0, seed: int = 0) -> dict[str, float]:
    """The protocol's figures (`models.training.evaluate`) on `users` examples of `task`
    (`protocol_data(dataset).test`) drawn with `seed`, all of them when 0."""
    from models.training import evaluate as protocol_figures

    return protocol_figures(model, task.subset(sample_rows(len(task), users, seed)), 256)


def popular_items(dataset, count: int) -> list[int]:
    """The `count` items most often a training target (inner ids, sorted; all when 0)."""
    counts = np.bincount(dataset.splits["train"].targets, minlength=dataset.num_items + 1)
    counts[0] = -1
    chosen = np.argsort(-counts, kind="stable")[: count or dataset.num_items]
    return sorted(int(item) for item in chosen if item > 0)


def evaluation_items(
    dataset, task, users: int, seed: int, resample: str, k_items: int, popular: int
) -> list[int]:
    """The items whose knowledge an evaluation regenerates: each evaluated example's
    target and the history items alignment re-samples (`resample`), plus the `popular`
    most popular items. Regenerating the whole catalog costs a generation per item (about
    a second each on a CPU); the others keep their cached knowledge, which Rec was
    trained with."""
    rows = task.subset(sample_rows(len(task), users, seed))
    slots = resampled_items(rows.histories, rows.lengths, rows.targets, resample, k_items)
    chosen = set(rows.targets.tolist()) | set(slots.flatten().tolist())
    if popular:
        chosen |= set(popular_items(dataset, popular))
    return sorted(item for item in chosen if item > 0)


# -- the LLM -------------------------------------------------------------------------------


def policy_for(llm, settings, device: torch.device):
    alignment = settings.alignment
    checkpointing = alignment.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device.type == "cuda"
    return attach_lora(
        llm.to(device),
        rank=alignment.lora_rank,
        alpha=alignment.lora_alpha,
        dropout=alignment.lora_dropout,
        target_modules=alignment.lora_target_modules,
        gradient_checkpointing=checkpointing,
    )


@torch.no_grad()
def regenerate_knowledge(
    policy,
    tokenizer,
    template,
    infos: list,
    items: list[int],
    encode,
    table: torch.Tensor,
    batch_size: int,
    max_new_tokens: int,
) -> torch.Tensor:
    """The LLM channel's `table` with the rows of `items` (inner ids) rewritten by the
    (aligned) LLM, greedily, each text encoded alone as `knowledge generate` encodes it.
    The whole catalog takes a while: a bar shows it."""
    from tqdm import tqdm

    from models.knowledge.generation import KnowledgeGenerator

    generator = KnowledgeGenerator(policy, tokenizer, template, batch_size, max_new_tokens)
    policy.eval()
    shown = [infos[item] for item in items]
    with tqdm(total=len(items), desc="aligned knowledge", unit="item") as bar:
        texts = generator.generate(shown, on_batch=lambda done: bar.update(len(done)))
    vectors = torch.as_tensor(encode([text.text for text in texts]))
    table = table.clone()
    table[torch.as_tensor(items)] = vectors.to(table.dtype)
    return table


# -- the run -------------------------------------------------------------------------------


@dataclass
class AlignmentParts:
    """What Algorithm 1 runs on; built once, reused by the bench's variants."""

    policy: object
    tokenizer: object
    template: object
    infos: list
    task: AlignmentTask
    recommender: torch.nn.Module
    frozen_recommender: torch.nn.Module
    encode: Encoder
    device: torch.device
    dtype: torch.dtype


def align(
    parts: AlignmentParts,
    settings,
    mode: str | None = None,
    progress=None,
    keep_texts: bool = False,
    stop_at: float | None = None,
) -> AlignmentRun:
    """Algorithm 1 on `parts` (the policy and Rec are trained in place); `keep_texts` keeps
    each iteration's sampled texts in its record; no iteration starts after `stop_at`
    (`time.monotonic()`), so a bench's evaluation still fits its time."""
    alignment = settings.alignment
    sampler = KnowledgeSampler(
        parts.policy,
        parts.tokenizer,
        parts.recommender,
        parts.frozen_recommender,
        parts.encode,
        DocumentOf(parts.template, parts.infos),
        parts.task,
        SamplingConfig(
            batch_size=alignment.batch_size,
            max_new_tokens=alignment.max_new_tokens,
            temperature=alignment.temperature,
            top_p=alignment.top_p,
            device=str(parts.device),
            dtype=parts.dtype,
        ),
    )
    config = TrainerConfig(
        iterations=alignment.iterations,
        refresh_interval=alignment.refresh_interval,
        alpha=alignment.alpha,
        baseline=alignment.baseline,
        baseline_decay=alignment.baseline_decay,
        max_ratio=alignment.max_ratio,
        llm_learning_rate=alignment.llm_learning_rate,
        rec_learning_rate=alignment.rec_learning_rate,
        queue_batches=alignment.queue_batches,
        replay_batches=alignment.replay_batches,
        threads_per_process=alignment.threads_per_process,
        seed=alignment.seed,
        keep_texts=keep_texts,
        stop_at=stop_at,
    )
    return AlignmentTrainer(sampler, config).run(mode or alignment.mode, progress=progress)


@dataclass
class Prepared:
    dataset: object
    parts: AlignmentParts
    table: torch.Tensor  # the cached (not-aligned) knowledge table
    knowledge_summary: dict
    data: ProtocolData  # the protocol's tasks (test: the evaluation) and external item ids

    def aligned_knowledge(
        self, items: list[int], batch_size: int, max_new_tokens: int
    ) -> torch.Tensor:
        """The cached table with the rows of `items` rewritten by the policy as it stands."""
        parts = self.parts
        return regenerate_knowledge(
            parts.policy,
            parts.tokenizer,
            parts.template,
            parts.infos,
            items,
            parts.encode,
            self.table,
            batch_size,
            max_new_tokens,
        )


def prepare(settings, dataset_name: str) -> Prepared:
    """Everything Algorithm 1 needs for a dataset, built from settings."""
    from models.knowledge.prompts import template_for
    from streamrec.assets import load_llm
    from streamrec.datasets import load_dataset
    from workers.knowledge_pipeline import load_encoder
    from workers.recommender_training import channel_provenance, load_knowledge, protocol_data

    alignment = settings.alignment
    device = resolve_device(alignment.device)
    dtype = resolve_dtype(alignment.dtype, device)
    dataset = load_dataset(dataset_name, settings)
    data = protocol_data(dataset)
    folder = Path(alignment.knowledge_dir or settings.data_dir / "knowledge" / dataset_name)
    table, summary = load_knowledge(folder, data.item_ids)
    facts, _ = load_knowledge(folder, data.item_ids, "facts")  # the channel left as it is
    summary["provenance"] = channel_provenance(summary, ("facts", "llm"))
    frozen = pretrained_recommender(settings, data, None, alignment.base_checkpoint, device)
    for param in frozen.parameters():
        param.requires_grad_(False)
    recommender = pretrained_recommender(
        settings, data, table, alignment.knowledge_checkpoint, device, facts=facts
    )
    llm, tokenizer = load_llm(alignment.llm_path or None, settings, device=str(device))
    policy = policy_for(llm, settings, device)
    template = template_for(alignment.domain)
    infos = item_infos(dataset)
    histories, lengths, targets = split_tensors(
        dataset.splits["train"], alignment.max_examples, alignment.seed
    )
    task = AlignmentTask(
        histories=histories,
        lengths=lengths,
        targets=targets,
        prompts=chat_prompts(tokenizer, template, infos),
        knowledge=table,
        resample=alignment.resample,
        k_items=alignment.k_items,
    )
    encode = Encoder(load_encoder(settings, device=str(device)))
    parts = AlignmentParts(
        policy, tokenizer, template, infos, task, recommender, frozen, encode, device, dtype
    )
    return Prepared(dataset, parts, table, summary, data)


def run_summary(run: AlignmentRun, window: int) -> dict:
    """The figures of a run that go into metadata, the CLI output and the bench."""
    window = max(1, min(window, len(run.records) // 2 or 1))
    return {
        "mode": run.mode,
        "iterations": run.iterations,
        "seconds": round(run.seconds, 2),
        "iterations_per_s": round(run.iterations_per_s, 4),
        "mean_ratio_first": run.mean_ratio(first=window),
        "mean_ratio_last": run.mean_ratio(last=window),
        "reused_batches": run.reused_batches,
        "startup_s": round(run.startup_s, 2),
        "waited_s": round(run.waited_s, 2),
        "refreshes": len(run.refreshes),
    }


def run_job(settings, dataset_name: str, on_iteration=None, publish: bool = True) -> dict:
    """`streamrec align`: prepare, align, regenerate, evaluate, publish; the result figures."""
    from workers.alignment.publish import publish_outputs

    alignment = settings.alignment
    prepared = prepare(settings, dataset_name)
    parts = prepared.parts
    run = align(parts, settings, progress=on_iteration)
    summary = run_summary(run, alignment.refresh_interval)
    items = evaluation_items(
        prepared.dataset,
        prepared.data.test,
        alignment.eval_users,
        alignment.seed,
        alignment.resample,
        alignment.k_items,
        alignment.regenerate_popular_items,
    )
    aligned_table = prepared.aligned_knowledge(
        items, alignment.regenerate_batch_size, alignment.regenerate_max_new_tokens
    )
    parts.recommender.fusion.set_knowledge(aligned_table)  # what is evaluated and served
    metrics = evaluate(
        parts.recommender,
        prepared.data.test,
        alignment.eval_users,
        alignment.seed,
    )
    result = {"dataset": dataset_name, "metrics": metrics, "run": summary}
    if publish:
        adapter, seralm = publish_outputs(settings, prepared, metrics, summary)
        result["llm_adapter_version"] = adapter.version
        result["llm_adapter_path"] = str(adapter.path)
        result["seralm_version"] = seralm.version
    return result
