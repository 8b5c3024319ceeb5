"""The alignment job on a dataset: data, recommenders, LLM, Algorithm 1, evaluation, outputs.

`streamrec align --dataset ml-100k` and `bench/alignment.py` both run through
here. The pieces, in order:

1. the training split becomes the alignment task; the cached knowledge (from
   the not-aligned LLM, contract 2) becomes the knowledge table;
2. Rec_f (no knowledge, frozen) and Rec (with knowledge) come from checkpoint
   folders (contract 1) or are trained here with the recommender's own loss;
3. the LLM gets LoRA adapters; Algorithm 1 runs (async or sync);
4. the knowledge of the evaluated items is regenerated with the aligned LLM
   (greedy, with the knowledge engineer's prompt and parser), and Rec is
   evaluated on it under the project's protocol (full ranking, every earlier item of
   the user masked: `models.training.evaluate` on `protocol_data`'s test task);
5. outputs: the adapter (`save_pretrained`) and the aligned Rec as registry
   versions (`llm-adapter`, `seralm`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.alignment.policy import attach_lora
from models.device import resolve_device
from workers.alignment.generator import AlignmentTask, KnowledgeSampler, SamplingConfig
from workers.alignment.trainer import AlignmentRun, AlignmentTrainer, TrainerConfig

log = logging.getLogger(__name__)


# -- devices -------------------------------------------------------------------------------


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 autocast on an accelerator by default; float32 on CPU (where bf16 matmuls are slow
    on most machines and the losses would only get noisier)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


# -- data ----------------------------------------------------------------------------------


def knowledge_table(folder: Path, dataset) -> tuple[torch.Tensor, dict]:
    """The cached knowledge (contract 2) as a table by inner item id: (n_items + 1, K)."""
    vectors_path, ids_path = folder / "vectors.npy", folder / "item_ids.npy"
    if not vectors_path.is_file() or not ids_path.is_file():
        raise FileNotFoundError(
            f"no knowledge in {folder} (vectors.npy, item_ids.npy): run "
            f"`streamrec knowledge generate --dataset {dataset.name}` first"
        )
    vectors = np.load(vectors_path).astype(np.float32)
    external = np.load(ids_path)
    inner_of = {item.external_id: inner for inner, item in dataset.items.items()}
    table = np.zeros((dataset.num_items + 1, vectors.shape[1]), dtype=np.float32)
    found = 0
    for row, item_id in enumerate(external.tolist()):
        inner = inner_of.get(int(item_id))
        if inner is not None:
            table[inner] = vectors[row]
            found += 1
    if found == 0:
        raise ValueError(f"none of the items in {folder} belong to {dataset.name}")
    summary_path = folder / "summary.json"
    summary = {}
    if summary_path.is_file():
        import json

        summary = json.loads(summary_path.read_text())
    return torch.from_numpy(table), summary


def item_infos(dataset) -> list:
    """The prompt's view of each item, by inner id ([0] is None)."""
    from models.knowledge.prompts import ItemInfo

    infos = [None] * (dataset.num_items + 1)
    for inner, item in dataset.items.items():
        infos[inner] = ItemInfo(
            item_id=item.external_id,
            title=item.title or f"item {item.raw_id}",
            year=item.year,
            categories=tuple(item.genres),
        )
    return infos


class DocumentOf:
    """(item, raw sampled continuation) -> the document to encode: parsed like the knowledge
    job parses it (the prompt ends with the answer's opening, put back), after the item's
    facts as the template writes them, so sampled and cached vectors mean the same."""

    def __init__(self, template, infos: list):
        self.template = template
        self.infos = infos

    def __call__(self, item: int, continuation: str) -> str:
        from models.knowledge.parsing import parse_knowledge

        knowledge = parse_knowledge(self.template.response_prefix + continuation).text
        return self.template.document(self.infos[item], knowledge)


class Encoder:
    """The text encoder as a picklable callable (the generator process gets a copy)."""

    def __init__(self, text_encoder, batch_size: int = 64):
        self.text_encoder = text_encoder
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.text_encoder.encode(texts, batch_size=self.batch_size)


def sample_rows(count: int, limit: int = 0, seed: int = 0) -> np.ndarray:
    """`limit` of `count` rows drawn with `seed`, in order (all of them when 0)."""
    index = np.arange(count)
    if limit and limit < count:
        index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
    return index


def split_tensors(split, limit: int = 0, seed: int = 0):
    """(histories, lengths, targets) of a split, optionally a seeded random subset."""
    index = sample_rows(len(split), limit, seed)
    return (
        torch.as_tensor(split.histories[index], dtype=torch.long),
        torch.as_tensor(split.lengths[index], dtype=torch.long),
        torch.as_tensor(split.targets[index], dtype=torch.long),
    )


# -- recommenders --------------------------------------------------------------------------


def user_sequences(split) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each user's longest training example as one causal sequence: (inputs [U, L], lengths
    [U], next items [U, L], 0 where none). The split holds every prefix of a user's history
    as an example; training every position of the longest one carries the same signal at a
    fraction of the cost (the all-positions objective)."""
    last_row = {}
    for row, user in enumerate(split.users.tolist()):
        last_row[user] = row  # rows are in time order per user: the last is the longest
    rows = np.fromiter(last_row.values(), dtype=np.int64)
    histories = split.histories[rows]
    lengths = split.lengths[rows]
    full = np.concatenate([histories, np.zeros((len(rows), 1), dtype=histories.dtype)], axis=1)
    full[np.arange(len(rows)), lengths] = split.targets[rows]
    next_items = full[:, 1:].copy()
    return (
        torch.as_tensor(histories, dtype=torch.long),
        torch.as_tensor(lengths, dtype=torch.long),
        torch.as_tensor(next_items, dtype=torch.long),
    )


def train_recommender(
    model: torch.nn.Module,
    split,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> torch.nn.Module:
    """A plain loop on the recommender's own all-positions loss (contract 1)."""
    inputs, lengths, next_items = user_sequences(split)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.to(device).train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = model.loss(
                inputs[rows].to(device), lengths[rows].to(device), next_items[rows].to(device)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def evaluate(model: torch.nn.Module, task, users: int = 0, seed: int = 0) -> dict[str, float]:
    """The protocol's figures (`models.training.evaluate`) on `users` examples of `task`
    (`protocol_data(dataset).test`) drawn with `seed`, all of them when 0."""
    from models.training import evaluate as protocol_figures

    return protocol_figures(model, task.subset(sample_rows(len(task), users, seed)), 256)


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
    """`table` with the rows of `items` (inner ids) rewritten by the (aligned) LLM, greedily,
    as the knowledge job writes them. The whole catalog takes a while: a bar shows it."""
    from tqdm import tqdm

    from models.knowledge.generation import KnowledgeGenerator
    from workers.knowledge_job import documents

    generator = KnowledgeGenerator(policy, tokenizer, template, batch_size, max_new_tokens)
    policy.eval()
    shown = [infos[item] for item in items]
    with tqdm(total=len(items), desc="aligned knowledge", unit="item") as bar:
        texts = generator.generate(shown, on_batch=lambda done: bar.update(len(done)))
    vectors = torch.as_tensor(encode(documents(template, shown, texts)))
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


def align(parts: AlignmentParts, settings, mode: str | None = None, progress=None) -> AlignmentRun:
    """Algorithm 1 on `parts` (the policy and Rec are trained in place)."""
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
    )
    return AlignmentTrainer(sampler, config).run(mode or alignment.mode, progress=progress)


def chat_prompts(tokenizer, template, infos: list) -> list[str]:
    """The chat-formatted prompt of every item, by inner id ([0] empty)."""
    from models.knowledge.generation import KnowledgeGenerator

    generator = KnowledgeGenerator(None, tokenizer, template)
    return [""] + [generator.prompt(info) for info in infos[1:]]


@dataclass
class Prepared:
    dataset: object
    parts: AlignmentParts
    table: torch.Tensor  # the cached (not-aligned) knowledge table
    knowledge_summary: dict
    item_ids: np.ndarray  # external id per inner id ([0] = 0), for checkpoints


def _recommender(settings, dataset, table, checkpoint: str, device, seed: int):
    """A checkpoint folder's recommender, else one trained here (Rec_f when `table` is None)."""
    from models.sequential import build_recommender

    alignment = settings.alignment
    if checkpoint:
        from models.sequential import SequentialRecommender

        loaded = SequentialRecommender.from_pretrained(Path(checkpoint), device=str(device))
        return loaded.model.to(device)
    torch.manual_seed(seed)
    model = build_recommender(alignment.recommender, dataset.num_items + 1, knowledge=table)
    kind = "with" if table is not None else "without"
    log.info("training %s %s knowledge", alignment.recommender, kind)
    return train_recommender(
        model,
        dataset.splits["train"],
        alignment.pretrain_epochs,
        alignment.pretrain_learning_rate,
        alignment.pretrain_batch_size,
        seed,
        device,
    )


def prepare(settings, dataset_name: str) -> Prepared:
    """Everything Algorithm 1 needs for a dataset, built from settings."""
    from models.knowledge.prompts import template_for
    from streamrec.assets import load_llm
    from streamrec.datasets import load_dataset
    from workers.knowledge_job import load_encoder

    alignment = settings.alignment
    device = resolve_device(alignment.device)
    dtype = resolve_dtype(alignment.dtype, device)
    dataset = load_dataset(dataset_name, settings)
    folder = Path(alignment.knowledge_dir or settings.data_dir / "knowledge" / dataset_name)
    table, summary = knowledge_table(folder, dataset)
    seed = alignment.seed
    frozen = _recommender(settings, dataset, None, alignment.base_checkpoint, device, seed)
    for param in frozen.parameters():
        param.requires_grad_(False)
    recommender = _recommender(
        settings, dataset, table, alignment.knowledge_checkpoint, device, alignment.seed
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
    item_ids = np.zeros(dataset.num_items + 1, dtype=np.int64)
    for inner, item in dataset.items.items():
        item_ids[inner] = item.external_id
    return Prepared(dataset, parts, table, summary, item_ids)


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


def publish_outputs(settings, prepared: Prepared, metrics: dict, summary: dict) -> tuple:
    """The adapter as an `llm-adapter` version, then the aligned Rec (with the aligned
    knowledge) as a `recommender.family` version that names it; each announced."""
    import tempfile

    from streamrec.registry import LLM_ADAPTER_FAMILY, VersionMetadata, publish

    base_llm = prepared.knowledge_summary.get("llm_version") or prepared.knowledge_summary.get(
        "llm", "default"
    )
    alignment = settings.alignment.model_dump()
    with tempfile.TemporaryDirectory(prefix="streamrec-align-") as scratch:
        adapter_folder = Path(scratch) / "adapter"
        prepared.parts.policy.save_pretrained(adapter_folder)
        adapter = publish(
            settings,
            LLM_ADAPTER_FAMILY,
            adapter_folder,
            VersionMetadata(
                metrics=metrics,
                llm_version=base_llm,
                extra={"alignment": alignment, "run": summary},
            ),
        )
        recommender_folder = Path(scratch) / "seralm"
        # The recommender holds the aligned table (set by run_job): it is what is saved.
        prepared.parts.recommender.save_pretrained(
            recommender_folder, prepared.item_ids, extra={"aligned_with": adapter.version}
        )
        seralm = publish(
            settings,
            settings.recommender.family,
            recommender_folder,
            VersionMetadata(
                metrics=metrics,
                llm_version=f"{base_llm}+{adapter.version}",
                adapter_version=adapter.version,
                extra={"run": summary},
            ),
        )
    return adapter, seralm


def run_job(settings, dataset_name: str, on_iteration=None, publish: bool = True) -> dict:
    """`streamrec align`: prepare, align, regenerate, evaluate, publish; the result figures."""
    from workers.recommender_training import protocol_data

    alignment = settings.alignment
    prepared = prepare(settings, dataset_name)
    parts = prepared.parts
    run = align(parts, settings, progress=on_iteration)
    summary = run_summary(run, alignment.refresh_interval)
    items = sorted(prepared.dataset.items)
    aligned_table = regenerate_knowledge(
        parts.policy,
        parts.tokenizer,
        parts.template,
        parts.infos,
        items,
        parts.encode,
        prepared.table,
        alignment.regenerate_batch_size,
        alignment.regenerate_max_new_tokens,
    )
    parts.recommender.fusion.set_knowledge(aligned_table)  # what is evaluated and served
    metrics = evaluate(
        parts.recommender,
        protocol_data(prepared.dataset).test,
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
