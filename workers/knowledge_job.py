"""The catalog knowledge job: items requested on `knowledge-requests` or lacking
knowledge for the current LLM version -> LLM text and vectors in ClickHouse's
`item_knowledge` -> a registry version of the recommender that carries them (new
items added, the LLM-channel rows of items it has written where they were zero or
were just regenerated). The LLM pipeline itself is workers/knowledge_pipeline.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from prometheus_client import Counter as PromCounter

from models.knowledge.encoding import TextEncoder
from models.knowledge.generation import KnowledgeText
from models.knowledge.prompts import ItemInfo, template_for
from streamrec.settings import Settings
from workers.knowledge_pipeline import (
    KnowledgeLLM,
    generate_cached,
    load_encoder,
    load_knowledge_llm,
    make_generator,
    open_cache,
)

log = logging.getLogger(__name__)


KNOWLEDGE_ITEMS = PromCounter(
    "streamrec_knowledge_items_total", "Items given knowledge by the knowledge job", ["parse"]
)
KNOWLEDGE_FAILED = PromCounter(
    "streamrec_knowledge_items_failed_total", "Items the knowledge job could not give knowledge"
)
_ITEM_COLUMNS = "item_id, title, year, categories, description, attribute_keys, attribute_values"
_KNOWLEDGE_COLUMNS = "item_id, llm_version, prompt_version, text, vector, created_at, created_ms"
# What an `item_knowledge` vector encodes, in its prompt_version after the template's: the
# LLM channel (the LLM's text alone). Rows of the single-vector layout (facts, then the
# text) lack it, so they count as missing and are encoded again (their texts are cached).
VECTOR_LAYOUT = "llm-channel"


def rows_version(prompt_version: str) -> str:
    """The `item_knowledge.prompt_version` of the vectors this code writes."""
    return f"{prompt_version}+{VECTOR_LAYOUT}"


@dataclass
class JobOutcome:
    run_id: str
    llm_version: str
    prompt_version: str
    requested: int  # items named on knowledge-requests this run
    ok: int
    failed: int
    skipped: int
    seconds: float
    published: str | None  # the registry version that carries the new knowledge
    # What generation cost this run (GenerationStats.summary: prefill and decode seconds,
    # prompt, prefilled and generated tokens, the prefix cache hit rate, items/s).
    generation: dict


def _catalog_item(row: tuple) -> ItemInfo:
    item_id, title, year, categories, description, keys, values = row
    attributes = dict(zip(keys, values, strict=False))
    if description:
        attributes.setdefault("about", description)
    return ItemInfo(item_id, title, year or None, tuple(categories), attributes)


class KnowledgeJob:
    """One run: requested and missing items -> knowledge rows -> a registry version.

    What is missing is read from ClickHouse at the start of every run, and rows
    are written `job_write_batch` items at a time, so a run killed midway leaves
    the next one exactly the items it had not written yet. The request offsets
    are committed only after the run's writes, and a request for an item that
    already has knowledge is skipped, so a redelivered request costs nothing.
    """

    def __init__(
        self,
        settings: Settings,
        llm: KnowledgeLLM | None = None,
        encoder: TextEncoder | None = None,
        progress: bool = True,
    ):
        self.settings = settings
        self.config = settings.knowledge
        self.llm = llm or load_knowledge_llm(settings)
        self.encoder = encoder or load_encoder(settings)
        self.template = template_for(self.config.job_domain)
        self.generator = make_generator(settings, self.llm, self.template)
        self.progress = progress

    def _consumer(self):
        from kafka import KafkaConsumer

        from streamrec.services import kafka_bootstrap

        consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap(self.settings),
            group_id=self.config.job_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # The requests are committed at the end of the run, so the group must keep the
            # job that long: a catalog run takes minutes to hours (kafka-python's 5).
            max_poll_interval_ms=int(self.config.job_max_poll_interval_s * 1000),
        )
        topic = self.settings.kafka.knowledge_requests_topic
        consumer.partitions_for_topic(topic)  # known before joining, as the trainer does
        consumer.subscribe([topic])
        return consumer

    def _drain_requests(self, consumer) -> list[int]:
        """Every request waiting for this consumer group: polls until the group has its
        partitions and has read each of them up to the end offset it had at that moment."""
        from streamrec.v1 import events_pb2

        items: list[int] = []
        deadline = time.monotonic() + self.config.job_join_timeout_s
        ends: dict = {}
        while time.monotonic() < deadline:
            records = consumer.poll(timeout_ms=self.config.job_poll_timeout_ms)
            for messages in records.values():
                for message in messages:
                    request = events_pb2.KnowledgeRequest()
                    try:
                        request.ParseFromString(message.value)
                    except Exception:  # a malformed request names no item: nothing to do
                        log.warning("unreadable knowledge request at offset %s", message.offset)
                        continue
                    items.append(request.item_id)
            assigned = consumer.assignment()
            if not assigned:
                continue
            if set(ends) != assigned:
                ends = consumer.end_offsets(list(assigned))
            if all(consumer.position(partition) >= ends[partition] for partition in assigned):
                break
        else:
            log.warning("knowledge requests not drained within %ss", self.config.job_join_timeout_s)
        return items

    def _missing_items(self, client) -> list[ItemInfo]:
        rows = client.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items FINAL WHERE deleted = 0 AND item_id NOT IN "
            "(SELECT item_id FROM item_knowledge WHERE llm_version = %(llm)s "
            "AND prompt_version = %(prompt)s) ORDER BY item_id",
            {"llm": self.llm.version, "prompt": rows_version(self.template.version)},
        )
        return [_catalog_item(row) for row in rows]

    def run_once(self) -> JobOutcome:
        from tqdm import tqdm

        from streamrec.coverage import record_failures, record_target
        from streamrec.db import connect
        from streamrec.jobs import JobRecorder

        started = time.perf_counter()
        published = None
        consumer = self._consumer()
        client = connect(self.settings)
        cache = open_cache(self.settings, self.llm.version, self.template.version)
        rows = rows_version(self.template.version)
        try:
            with JobRecorder(self.settings, "knowledge", llm_version=self.llm.version) as run:
                record_target(client, run.run_id, self.llm.version, rows)
                requested = set(self._drain_requests(consumer))
                pending = self._missing_items(client)
                pending_ids = {item.item_id for item in pending}
                # Requested items first; a request for an item that has knowledge (or that the
                # catalog does not hold yet: the next run finds it) is skipped.
                pending.sort(key=lambda item: item.item_id not in requested)
                run.progress(skipped=len(requested - pending_ids))
                failures: list[str] = []
                written: set[int] = set()
                bar = tqdm(
                    total=len(pending), desc="knowledge", unit="item", disable=not self.progress
                )
                step = self.config.job_write_batch
                before = replace(self.generator.stats)
                for start in range(0, len(pending), step):
                    chunk = pending[start : start + step]
                    try:
                        texts = generate_cached(self.generator, cache, chunk)
                        vectors = self.encoder.encode(
                            [text.text for text in texts], self.config.encode_batch_size
                        )
                        write_knowledge(client, self.llm.version, rows, texts, vectors)
                    except Exception as error:  # one bad batch must not lose the others
                        log.exception("knowledge for items %s failed", [i.item_id for i in chunk])
                        failures.append(f"{type(error).__name__}: {error}")
                        record_failures(
                            client,
                            run.run_id,
                            self.llm.version,
                            rows,
                            [item.item_id for item in chunk],
                            failures[-1],
                        )
                        KNOWLEDGE_FAILED.inc(len(chunk))
                        run.progress(failed=len(chunk))
                    else:
                        for text in texts:
                            KNOWLEDGE_ITEMS.labels(text.parse).inc()
                        written.update(text.item_id for text in texts)
                        run.progress(ok=len(chunk))
                    run.stats = self.generator.stats.since(before).summary()
                    bar.update(len(chunk))
                bar.close()
                run.stats = self.generator.stats.since(before).summary()
                published = extend_items(
                    self.settings, client, self.llm.version, rows, self.encoder, written
                )
                consumer.commit()
                if failures:
                    run.fail(f"{run.failed} items failed; last error: {failures[-1]}")
            return JobOutcome(
                run_id=run.run_id,
                llm_version=self.llm.version,
                prompt_version=self.template.version,
                requested=len(requested),
                ok=run.ok,
                failed=run.failed,
                skipped=run.skipped,
                seconds=round(time.perf_counter() - started, 2),
                published=published,
                generation=run.stats,
            )
        finally:
            cache.close()
            client.disconnect()
            consumer.close(autocommit=False)


def write_knowledge(
    client, llm_version: str, prompt_version: str, texts: list[KnowledgeText], vectors
) -> None:
    """`item_knowledge` rows: each item's text and vector under the LLM and prompt versions."""
    now = time.time()
    rows = [
        (
            text.item_id,
            llm_version,
            prompt_version,
            text.text,
            vector.tolist(),
            datetime.fromtimestamp(now, UTC).replace(tzinfo=None),
            int(now * 1000),
        )
        for text, vector in zip(texts, vectors, strict=True)
    ]
    client.execute(f"INSERT INTO item_knowledge ({_KNOWLEDGE_COLUMNS}) VALUES", rows)


def facts_vectors(settings: Settings, client, item_ids: list[int], encoder) -> torch.Tensor:
    """The facts channel of catalog items: each one's facts (`PromptTemplate.facts`, from
    ClickHouse `items`) encoded alone; zeros without an encoder or for an unknown item."""
    vectors = torch.zeros(len(item_ids), encoder.dim if encoder is not None else 0)
    if encoder is None:
        return vectors
    rows = client.execute(
        f"SELECT {_ITEM_COLUMNS} FROM items FINAL WHERE item_id IN %(items)s",
        {"items": tuple(item_ids)},
    )
    template = template_for(settings.knowledge.job_domain)
    info = {item.item_id: item for item in map(_catalog_item, rows)}
    known = [row for row, item in enumerate(item_ids) if item in info]
    if known:
        facts = [template.facts(info[item_ids[row]]) for row in known]
        vectors[known] = torch.from_numpy(encoder.encode(facts))
    return vectors


def extend_items(
    settings: Settings,
    client,
    llm_version: str,
    prompt_version: str,
    encoder=None,
    rewritten: Collection[int] = (),
) -> str | None:
    """A new version of the served recommender that carries the knowledge (of these LLM and
    `item_knowledge` prompt versions) it lacks, announced on model-updates; None when there
    is no recommender or nothing to change. It adds every item that has knowledge but is
    not in the model (input initialised from the knowledge through the fusion layer: the
    LLM channel from `item_knowledge`, the facts channel from `facts_vectors`), and writes
    the LLM-channel rows of items the model has already whose row is zero (the online
    trainer added them before their knowledge existed) or whose knowledge this run wrote
    (`rewritten`: an aligned LLM's regeneration reaches the served items). The facts of
    the items it has are left as they are, and nothing is trained. The job calls it after
    each run; `bench/online.py` too, for the items new since its split."""
    import dataclasses
    import tempfile

    from streamrec.registry import ModelRegistry, VersionMetadata, publish

    family = settings.recommender.family
    latest = ModelRegistry.from_settings(settings).latest(family)
    if latest is None:
        log.info("no %s version in the registry: no model to add items to", family)
        return None
    from models.sequential import SequentialRecommender

    loaded = SequentialRecommender.from_pretrained(latest.path)
    fusion, model_dim = loaded.model.fusion, loaded.model.knowledge_dim
    position = {int(item): row for row, item in enumerate(loaded.item_ids) if row}
    rows = client.execute(
        "SELECT item_id, argMax(vector, created_ms) FROM item_knowledge "
        "WHERE llm_version = %(llm)s AND prompt_version = %(prompt)s GROUP BY item_id "
        "ORDER BY item_id",
        {"llm": llm_version, "prompt": prompt_version},
    )
    new = [(item_id, vector) for item_id, vector in rows if item_id not in position]
    filled = [] if model_dim is None else _llm_rows_to_write(fusion, position, rows, rewritten)
    if not new and not filled:
        return None
    width = len((new or filled)[0][1])
    if model_dim is not None and model_dim != width:
        raise ValueError(
            f"{latest.family} {latest.version} takes {model_dim}-dim knowledge, the text "
            f"encoder makes {width}-dim vectors"
        )
    if filled:
        table = fusion.knowledge.clone()
        table[[row for row, _ in filled]] = torch.tensor([vector for _, vector in filled])
        fusion.set_knowledge(table)
    item_ids = loaded.item_ids
    if new:
        vectors = torch.tensor([vector for _, vector in new], dtype=torch.float32)
        facts = None
        if loaded.model.facts_dim is not None:
            facts = facts_vectors(settings, client, [item_id for item_id, _ in new], encoder)
            if facts.shape[1] != loaded.model.facts_dim:
                facts = None  # no encoder, or another one: the new items' facts rows stay zero
        loaded.model.extend_items(len(new), vectors if model_dim is not None else None, facts)
        added = np.asarray([item_id for item_id, _ in new], dtype=np.int64)
        item_ids = np.concatenate([item_ids, added])
    inherited = VersionMetadata.from_record(latest.metadata)
    channels = dict(inherited.extra.get("knowledge_channels") or {})
    if model_dim is not None:
        llm = {"llm_version": llm_version, "prompt_version": prompt_version}
        channels["llm"] = {**channels.get("llm", {}), **llm}
    metadata = dataclasses.replace(
        inherited,
        llm_version=llm_version,
        parent=latest.version,
        extra={
            **inherited.extra,
            "prompt_version": prompt_version,
            "knowledge_items_added": len(new),
            "knowledge_items_filled": len(filled),
            "knowledge_channels": channels,
        },
    )
    with tempfile.TemporaryDirectory() as folder:
        loaded.model.save_pretrained(Path(folder), item_ids, extra=loaded.extra)
        version = publish(settings, family, Path(folder), metadata)
    log.info(
        "published %s %s with %d new items and the LLM rows of %d it had",
        version.family,
        version.version,
        len(new),
        len(filled),
    )
    return version.version


def _llm_rows_to_write(
    fusion, position: dict[int, int], rows: list, rewritten: Collection[int]
) -> list[tuple[int, list[float]]]:
    """(model row, vector) for each item the model has whose LLM-channel row is zero or whose
    knowledge was just rewritten, and whose row differs from its newest knowledge."""
    table = fusion.knowledge
    if table is None:  # a text-encoder channel: there are no rows to write
        return []
    empty = ~table.any(dim=1)
    found = []
    for item_id, vector in rows:
        row = position.get(item_id)
        if row is None or not (empty[row] or item_id in rewritten):
            continue
        if len(vector) != table.shape[1] or not torch.equal(table[row], torch.tensor(vector)):
            found.append((row, vector))
    return found
