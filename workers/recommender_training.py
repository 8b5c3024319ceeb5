"""Glue between a dataset and the recommenders: splits -> tensors -> training -> checkpoint,
and the evaluation rows (mean and standard deviation over seeds) every bench writes.

The protocol is RecBole's sequential one as `streamrec.datasets` reproduces it:
training windows come from each user's training sequence, validation and test
examples are the splits' own rows (history of at most 50 items), and the items
masked in a full ranking are all of the user's items before the target.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prometheus_client import Gauge

from models.device import resolve_device
from models.metrics import ranking_metrics
from models.sequential import build_recommender
from models.sequential.base import SequentialRecommender
from models.training import FitConfig, FitResult, RankingTask, fit, rank_targets, training_windows
from streamrec.registry import ModelVersion
from streamrec.settings import RecommenderSettings, Settings

log = logging.getLogger(__name__)

EPOCH = Gauge("streamrec_recommender_epoch", "Epochs run by the current training", ["model"])
LOSS = Gauge("streamrec_recommender_loss", "Mean training loss of the last epoch", ["model"])
VALID_NDCG = Gauge(
    "streamrec_recommender_valid_ndcg_at_10", "Validation NDCG@10 of the last epoch", ["model"]
)


@dataclass
class ProtocolData:
    """A dataset under the protocol: each user's training sequence and the two ranking tasks."""

    dataset_name: str
    n_items: int  # padding included
    train_sequences: list[np.ndarray]
    valid: RankingTask
    test: RankingTask
    item_ids: np.ndarray  # external id per inner id; [0] = 0


def external_ids(dataset) -> np.ndarray:
    """The external id of each inner item id ([0], padding, is 0): what checkpoints keep."""
    item_ids = np.zeros(dataset.num_items + 1, dtype=np.int64)
    for inner, item in dataset.items.items():
        item_ids[inner] = item.external_id
    return item_ids


def _ranking_task(split, earlier: dict[int, np.ndarray]) -> RankingTask:
    masked = []
    for user, target in zip(split.users.tolist(), split.targets.tolist(), strict=True):
        seen = earlier.get(user, np.zeros(0, dtype=np.int64))
        masked.append(np.unique(seen[seen != target]))
    return RankingTask(
        histories=torch.from_numpy(np.asarray(split.histories, dtype=np.int64)),
        lengths=torch.from_numpy(np.asarray(split.lengths, dtype=np.int64)),
        targets=torch.from_numpy(np.asarray(split.targets, dtype=np.int64)),
        masked=masked,
    )


def protocol_data(dataset) -> ProtocolData:
    splits = dataset.splits
    train = {
        user: np.asarray(items, dtype=np.int64)
        for user, items in splits["train"].user_sequences().items()
    }
    valid_target = dict(
        zip(splits["valid"].users.tolist(), splits["valid"].targets.tolist(), strict=True)
    )
    before_test = {
        user: np.append(items, valid_target[user]) if user in valid_target else items
        for user, items in train.items()
    }
    return ProtocolData(
        dataset_name=dataset.name,
        n_items=dataset.num_items + 1,
        train_sequences=list(train.values()),
        valid=_ranking_task(splits["valid"], train),
        test=_ranking_task(splits["test"], before_test),
        item_ids=external_ids(dataset),
    )


# A knowledge folder's file per channel: the LLM's knowledge, the item's facts.
CHANNEL_FILES = {"llm": "vectors.npy", "facts": "facts.npy"}


def load_knowledge(
    folder: Path, item_ids: np.ndarray, channel: str = "llm"
) -> tuple[torch.Tensor, dict]:
    """One channel of the knowledge folder (vectors.npy or facts.npy, + item_ids.npy,
    external ids) as a table by inner id; items without a vector (and padding) get zeros."""
    name = CHANNEL_FILES[channel]
    vectors_path, ids_path = folder / name, folder / "item_ids.npy"
    if not vectors_path.is_file() or not ids_path.is_file():
        raise FileNotFoundError(
            f"no {channel} knowledge in {folder}: {name} and item_ids.npy are needed "
            "(`streamrec knowledge generate` writes them)"
        )
    vectors = np.load(vectors_path).astype(np.float32)
    external = np.load(ids_path).astype(np.int64)
    if len(vectors) != len(external):
        raise ValueError(f"{folder}: {len(vectors)} vectors for {len(external)} item ids")
    row_of = {int(item): row for row, item in enumerate(external)}
    table = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    rows = [(inner, row_of.get(int(item))) for inner, item in enumerate(item_ids) if inner]
    found = [(inner, row) for inner, row in rows if row is not None]
    if not found:
        raise ValueError(f"none of the items in {folder} belong to this dataset")
    inner_index, row_index = zip(*found, strict=True)
    table[list(inner_index)] = vectors[list(row_index)]
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary["coverage"] = len(found) / len(rows)
    return torch.from_numpy(table), summary


def fit_config(config: RecommenderSettings) -> FitConfig:
    return FitConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        patience=config.patience,
        max_seconds=config.max_seconds,
    )


def sample_sequences(sequences: list[np.ndarray], fraction: float, seed: int) -> list:
    """A `fraction` of the users' training sequences (the low-resource setting)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return sequences
    rng = np.random.default_rng(seed)
    count = max(1, round(len(sequences) * fraction))
    return [sequences[i] for i in sorted(rng.choice(len(sequences), count, replace=False))]


@dataclass
class TrainedRun:
    model: SequentialRecommender
    fit: FitResult
    test: dict
    seed: int
    ranks: torch.Tensor  # each test target's rank (what `test` summarises), for subsets


def train_run(
    config: RecommenderSettings,
    data: ProtocolData,
    model_name: str,
    seed: int,
    knowledge: torch.Tensor | None = None,
    text=None,
    fraction: float = 1.0,
    on_epoch: Callable[[dict], None] | None = None,
    facts: torch.Tensor | None = None,
) -> TrainedRun:
    """Train one seed to early stopping and evaluate its best weights on test."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = resolve_device(config.device)
    overrides = config.model_configs.get(model_name.lower(), {})
    model = build_recommender(
        model_name, data.n_items, overrides, knowledge=knowledge, text=text, facts=facts
    )
    model.to(device)
    windows = training_windows(
        sample_sequences(data.train_sequences, fraction, seed),
        model.config.max_seq_length,
        config.train_stride or model.config.max_seq_length,
    )

    def report(record: dict) -> None:
        EPOCH.labels(model_name).set(record["epoch"])
        LOSS.labels(model_name).set(record["loss"])
        if "valid" in record:
            VALID_NDCG.labels(model_name).set(record["valid"]["ndcg@10"])
        if on_epoch is not None:
            on_epoch(record)

    result = fit(model, windows, data.valid, fit_config(config), seed=seed, on_epoch=report)
    ranks = rank_targets(model, data.test, config.eval_batch_size)
    return TrainedRun(model, result, ranking_metrics(ranks), seed, ranks)


def summary_row(
    dataset: str, model: str, variant: str, runs: list[TrainedRun], note: str = ""
) -> dict:
    """The evaluation row every bench in this project writes."""
    names = list(runs[0].test)
    values = {name: np.array([run.test[name] for run in runs]) for name in names}
    row = {
        "dataset": dataset,
        "model": model,
        "variant": variant,
        "seeds": [run.seed for run in runs],
        "metrics": {name: float(v.mean()) for name, v in values.items()},
        "std": {name: float(v.std()) for name, v in values.items()},
        "best_epochs": [run.fit.best_epoch for run in runs],
        "epochs_run": [run.fit.epochs_run for run in runs],
        "stopped_by": [run.fit.stopped_by for run in runs],
        "train_seconds": [round(run.fit.seconds, 1) for run in runs],
        "valid": {
            name: float(np.mean([run.fit.best_valid.get(name, np.nan) for run in runs]))
            for name in names
        },
    }
    if note:
        row["note"] = note
    return row


def checkpoint_folder(settings: Settings, dataset: str, model: str, variant: str, seed: int):
    root = Path(settings.recommender.checkpoints_dir or settings.data_dir / "checkpoints")
    return root / dataset / f"{model}-{variant}" / f"seed{seed}"


def save_run(run: TrainedRun, data: ProtocolData, folder: Path, extra: dict) -> Path:
    return run.model.save_pretrained(
        folder,
        data.item_ids,
        extra={
            "dataset": data.dataset_name,
            "seed": run.seed,
            "best_epoch": run.fit.best_epoch,
            "valid": run.fit.best_valid,
            "test": run.test,
            "trained_at": int(time.time()),
            **extra,
        },
    )


def item_texts(folder: Path, item_ids: np.ndarray) -> list[str]:
    """The LLM channel's text of each item, by inner id, from texts.jsonl ("" where none):
    the LLM's knowledge alone (the facts are their own channel)."""
    path = folder / "texts.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no texts.jsonl in {folder}: the text mode fine-tunes on texts")
    by_item = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_item[int(record["item_id"])] = record.get("text") or " ".join(
                part for part in (record.get("description"), record.get("summarization")) if part
            )
    return ["" if not inner else by_item.get(int(item), "") for inner, item in enumerate(item_ids)]


def text_knowledge(encoder, tokenizer, texts: list[str], max_length: int):
    """A `TextKnowledge` over every item's text; padding and items without text get none."""
    from models.knowledge.fusion import TextKnowledge

    batch = tokenizer(
        [text or "" for text in texts],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    attention_mask = batch["attention_mask"].clone()
    for inner, text in enumerate(texts):
        if not text:
            attention_mask[inner] = 0
    return TextKnowledge(encoder, batch["input_ids"], attention_mask)


@dataclass
class Variant:
    """What a row trains: a name ("base", "two_channels", "base@0.1", ...), its knowledge
    channels (`knowledge`: the LLM's, `facts`: the item's facts)."""

    name: str
    knowledge: torch.Tensor | None = None
    fraction: float = 1.0
    text_factory: Callable[[], object] | None = None  # a fresh TextKnowledge per seed
    facts: torch.Tensor | None = None


def run_variant(
    settings: Settings,
    data: ProtocolData,
    model_name: str,
    variant: Variant,
    seeds: list[int],
    save_to: Callable[[int], Path] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    note: str = "",
    extra: dict | None = None,
) -> tuple[dict, list[TrainedRun]]:
    """Train and test one model and variant for each seed; the evaluation row."""
    runs = []
    for seed in seeds:
        text = variant.text_factory() if variant.text_factory else None
        run = train_run(
            settings.recommender,
            data,
            model_name,
            seed,
            knowledge=variant.knowledge,
            text=text,
            fraction=variant.fraction,
            on_epoch=None if on_epoch is None else (lambda record, s=seed: on_epoch(s, record)),
            facts=variant.facts,
        )
        log.info("%s %s seed %d: test %s", model_name, variant.name, seed, run.test)
        if save_to is not None:
            save_run(run, data, save_to(seed), {"variant": variant.name, **(extra or {})})
        runs.append(run)
    return summary_row(data.dataset_name, model_name, variant.name, runs, note), runs


def variant_name(base: str, fraction: float) -> str:
    return base if fraction >= 1 else f"{base}@{fraction:g}"


def channel_provenance(summary: dict, channels: tuple[str, ...]) -> dict:
    """Where each channel's vectors come from (the knowledge folder's summary): the facts'
    source and encoder; the LLM's version (adapter included), prompt version and encoder.
    What a checkpoint's and a registry version's metadata keep as `knowledge_channels`."""
    described = summary.get("channels") or {}
    provenance = {}
    for channel in channels:
        record = dict(described.get(channel) or {})
        if channel == "llm":
            record.setdefault("llm_version", summary.get("llm_version"))
            record.setdefault("prompt_version", summary.get("prompt_version"))
        provenance[channel] = record
    return provenance


def knowledge_variant(
    settings: Settings,
    data: ProtocolData,
    folder: Path | None,
    fraction: float = 1.0,
    name: str = "two_channels",
    channels: tuple[str, ...] = ("facts", "llm"),
) -> tuple[Variant, dict]:
    """The variant for a knowledge folder (None: the plain ID model) with the `channels`
    it reads (the LLM channel in the configured mode), and the folder's summary (LLM
    version, coverage, `provenance` of each channel)."""
    if folder is None:
        return Variant(variant_name("base", fraction), fraction=fraction), {}
    mode = settings.recommender.knowledge_mode
    if mode not in ("vectors", "text"):
        raise ValueError(f"knowledge_mode must be 'vectors' or 'text', got {mode!r}")
    facts, summary = (None, {})
    if "facts" in channels:
        facts, summary = load_knowledge(folder, data.item_ids, "facts")
    table = None
    if "llm" in channels:
        table, summary = load_knowledge(folder, data.item_ids, "llm")
    summary["provenance"] = channel_provenance(summary, channels)
    variant = Variant(variant_name(name, fraction), table, fraction, facts=facts)
    if mode == "vectors" or table is None:
        return variant, summary
    import copy

    from streamrec.assets import load_text_encoder

    encoder = load_text_encoder(
        settings=settings, device=str(resolve_device(settings.recommender.device))
    )
    texts = item_texts(folder, data.item_ids)

    def fresh_text_knowledge():
        model = copy.deepcopy(encoder.model).train()
        return text_knowledge(model, encoder.tokenizer, texts, encoder.max_length)

    return dataclasses.replace(variant, knowledge=None, text_factory=fresh_text_knowledge), summary


def train_first_model(settings: Settings, dataset, epochs: int, max_users: int = 0) -> ModelVersion:
    """A quick SASRec (no knowledge) on `dataset` for a fresh install, published as the
    first `recommender.family` version: `streamrec up` needs something to serve before the
    online trainer or alignment has published. `epochs` of the usual training (the best
    validation epoch kept), on the first `max_users` users' sequences when not 0."""
    from streamrec.registry import VersionMetadata, publish

    if settings.serving.torch_threads:
        # It trains beside `up`'s other processes: on busy shared cores one thread trains
        # several times faster than two (threads spinning at barriers), as in the server.
        torch.set_num_threads(settings.serving.torch_threads)
    data = protocol_data(dataset)
    if max_users:
        data = dataclasses.replace(data, train_sequences=data.train_sequences[:max_users])
    config = settings.recommender.model_copy(
        update={"epochs": epochs, "patience": epochs, "max_seconds": 0.0}
    )
    started = time.perf_counter()
    run = train_run(config, data, "sasrec", seed=0)
    with tempfile.TemporaryDirectory(prefix="streamrec-first-model-") as folder:
        save_run(run, data, Path(folder), {"source": "first-model"})
        return publish(
            settings,
            settings.recommender.family,
            Path(folder),
            VersionMetadata(
                metrics=run.test,
                extra={
                    "source": "first-model",
                    "dataset": dataset.name,
                    "epochs": epochs,
                    "users": len(data.train_sequences),
                    "train_seconds": round(time.perf_counter() - started, 1),
                },
            ),
        )
