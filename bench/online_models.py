"""The models of `bench/online.py`: the initial ones trained offline on the events before
the split, the catalog-facts knowledge (the facts channel alone: no LLM runs) that brings
the items new since the split to the knowledge variant, and the daily retrain that trains
from scratch on all events so far."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.knowledge.generation import KnowledgeText
from models.knowledge.prompts import template_for
from streamrec.datasets import Dataset, first_interactions
from streamrec.db import connect
from streamrec.registry import VersionMetadata, publish
from streamrec.settings import Settings
from streams.sink import ITEM_COLUMNS
from workers.knowledge_job import extend_items, write_knowledge
from workers.knowledge_pipeline import (
    dataset_items,
    domain_of,
    load_encoder,
    write_knowledge_files,
)
from workers.recommender_training import (
    channel_provenance,
    load_knowledge,
    protocol_data,
    save_run,
    train_run,
)

log = logging.getLogger(__name__)

# The `item_knowledge.llm_version` of knowledge made from the catalog's facts alone: no
# LLM ran, so its CPU time cannot decide the result.
CATALOG_FACTS = "catalog-facts"
MODEL = "sasrec"


def with_family(settings: Settings, family: str) -> Settings:
    changed = settings.model_copy(deep=True)
    changed.recommender.family = family
    return changed


@dataclass
class Trained:
    """One offline training: what it cost and how it did on its own test split."""

    wall_s: float
    cpu_s: float
    epochs_run: int
    test: dict
    items: int
    events: int


def train_and_publish(
    settings: Settings,
    dataset: Dataset,
    events: int,
    families: list[str],
    epochs: int,
    patience: int,
    seed: int = 0,
    knowledge_folder: Path | None = None,
    stop: threading.Event | None = None,
    extra: dict | None = None,
) -> Trained:
    """SASRec from scratch on the first `events` interactions (the protocol's training
    sequences, early stopping on its validation split), published to each family with
    `extra` in its metadata; with `knowledge_folder`, the facts channel from its facts.npy
    (the folder has no LLM channel). `stop` set ends the training after the current epoch
    (nothing is published)."""
    data = protocol_data(first_interactions(dataset, events))
    facts, extra = None, dict(extra or {})
    if knowledge_folder is not None:
        facts, summary = load_knowledge(knowledge_folder, data.item_ids, "facts")
        extra["knowledge_channels"] = channel_provenance(summary, ("facts",))
    config = settings.recommender.model_copy(
        update={"epochs": epochs, "patience": patience, "max_seconds": 0.0}
    )

    def check_stop(_record: dict) -> None:
        if stop is not None and stop.is_set():
            raise InterruptedError("the bench is stopping")

    wall, cpu = time.perf_counter(), time.thread_time()
    run = train_run(config, data, MODEL, seed, facts=facts, on_epoch=check_stop)
    trained = Trained(
        wall_s=time.perf_counter() - wall,
        cpu_s=time.thread_time() - cpu,
        epochs_run=run.fit.epochs_run,
        test=run.test,
        items=data.n_items - 1,
        events=events,
    )
    with tempfile.TemporaryDirectory(prefix="online-bench-") as folder:
        save_run(run, data, Path(folder), {"source": "online-bench", "events": events, **extra})
        for family in families:
            publish(
                settings,
                family,
                Path(folder),
                VersionMetadata(
                    metrics=run.test,
                    extra={
                        "source": "online-bench",
                        "events": events,
                        "seed": seed,
                        **extra,
                    },
                ),
            )
    return trained


def catalog_knowledge(settings: Settings, dataset: Dataset, folder: Path) -> dict:
    """Every item's facts channel: its catalog facts alone ("Title (year). Genres: ..."),
    encoded by the text encoder. Written as a knowledge folder whose LLM channel is empty
    (for the offline model), as `item_knowledge` rows of `CATALOG_FACTS` (the items that
    `extend_items` adds), and as the catalog's `items` rows (where `extend_items` and the
    trainer read the facts of the items they add, as in production)."""
    started = time.perf_counter()
    items = dataset_items(dataset)
    template = template_for(domain_of(settings, dataset.name))
    texts = [KnowledgeText(item.item_id, "", "", "", "raw") for item in items]
    facts = [template.facts(item) for item in items]
    encoder = load_encoder(settings, device="cpu")
    vectors = encoder.encode(facts, settings.knowledge.encode_batch_size)
    summary = {
        "dataset": dataset.name,
        "items": len(items),
        "llm_version": CATALOG_FACTS,
        "prompt_version": template.version,
        "encoder_dim": encoder.dim,
        "channels": {"facts": {"source": f"{dataset.name} item facts", "encoder": encoder.name}},
    }
    no_llm = np.zeros((len(items), 0), dtype=np.float32)
    write_knowledge_files(folder, texts, facts, no_llm, summary, vectors)
    client = connect(settings)
    try:
        write_knowledge(client, CATALOG_FACTS, template.version, texts, vectors)
        updated_ms = time.time_ns() // 1_000_000
        rows = [
            (item.item_id, item.title, item.year or 0, list(item.categories), "", [], [], 0)
            for item in items
        ]
        client.execute(
            f"INSERT INTO items ({ITEM_COLUMNS}) VALUES", [(*row, updated_ms) for row in rows]
        )
    finally:
        client.disconnect()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def add_new_items(settings: Settings, family: str, prompt_version: str) -> str | None:
    """The knowledge job's step for items that have knowledge but are not in the model: their
    facts channel encoded from the catalog by the text encoder."""
    encoder = load_encoder(settings, device="cpu")
    client = connect(settings)
    try:
        return extend_items(
            with_family(settings, family), client, CATALOG_FACTS, prompt_version, encoder
        )
    finally:
        client.disconnect()


@dataclass
class Retrain:
    day: int
    events: int
    wall_s: float
    cpu_s: float
    epochs_run: int
    published_ms: int


@dataclass
class DailyRetrain:
    """A thread that retrains from scratch on all events so far at each simulated day
    boundary and publishes to `family`. A boundary passed while a retrain runs is not
    queued: the next retrain starts as soon as that one ends, on the events by then."""

    settings: Settings
    dataset: Dataset
    before_split: int
    family: str
    epochs: int
    patience: int
    done: list[Retrain] = field(default_factory=list)
    boundaries: int = 0
    merged: int = 0
    cpu_s: float = 0.0  # every retrain's compute, an unfinished last one included
    _wanted: tuple[int, int] | None = None
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="daily-retrain", daemon=True)
        self._thread.start()

    def boundary(self, day: int, sent: int) -> None:
        """Day `day` begins with `sent` replayed events sent."""
        with self._lock:
            self.boundaries += 1
            if self._wanted is not None:
                self.merged += 1
            self._wanted = (day, sent)
        self._wake.set()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            with self._lock:
                wanted, self._wanted = self._wanted, None
                self._wake.clear()
            if wanted is None or self._stop.is_set():
                continue
            day, sent = wanted
            cpu = time.thread_time()
            try:
                trained = train_and_publish(
                    self.settings,
                    self.dataset,
                    self.before_split + sent,
                    [self.family],
                    self.epochs,
                    self.patience,
                    stop=self._stop,
                )
            except InterruptedError:
                return
            finally:
                self.cpu_s += time.thread_time() - cpu  # an interrupted retrain's too
            self.done.append(
                Retrain(
                    day,
                    trained.events,
                    round(trained.wall_s, 2),
                    round(trained.cpu_s, 2),
                    trained.epochs_run,
                    time.time_ns() // 1_000_000,
                )
            )
            log.info("daily retrain for day %d on %d events: %.0f s", day, sent, trained.wall_s)
