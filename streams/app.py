"""The faust-streaming app of the stream plane (`streamrec stream worker` runs it).

Agents work on batches (`take_events`) rather than single events: faust's
per-event overhead would otherwise cap ingestion far below what Kafka and
ClickHouse can take on two cores. Each batch is validated (bad events go to
the dead-letter topic with the reason and their source position), stored in
ClickHouse, folded into the per-user sequence table, and turned into
training examples; the users it stored are named on `history-updates`, so that
servers drop their cached histories. Its offsets are acknowledged only when the
agent asks for the next batch, i.e. after the rows are stored; messages to other
topics go to the producer after the rows are stored (streams/outbox.py) and are
acknowledged by the broker before the offsets are committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager

import faust
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from streamrec.services import kafka_bootstrap
from streamrec.settings import get_settings
from streamrec.v1 import events_pb2
from streams.identity import event_id_columns, first_wins
from streams.outbox import Outbox
from streams.producer import now_ms
from streams.sequences import apply_events
from streams.sequences import decode as decode_sequence
from streams.sequences import encode as encode_sequence
from streams.sink import ClickHouseSink, interaction_columns, item_row
from streams.topics import KNOWN_ITEMS_TABLE, SEQUENCES_TABLE
from streams.transport import App
from streams.validation import Problem, interaction_problem, item_problem

log = logging.getLogger(__name__)

EVENTS_IN = Counter("streamrec_stream_events_total", "Events consumed", ["topic"])
DEAD_LETTERS = Counter(
    "streamrec_stream_dead_letters_total", "Events sent to the DLQ", ["topic", "reason"]
)
EXAMPLES_OUT = Counter("streamrec_stream_training_examples_total", "Training examples produced")
REPEATED_EVENTS = Counter(
    "streamrec_stream_repeated_events_total",
    "Events dropped as an exact repeat of one already stored under their event_id",
)
NEW_ITEMS = Counter("streamrec_stream_new_items_total", "Items seen for the first time")
CONSUMER_LAG = Gauge(
    "streamrec_stream_consumer_lag",
    "Messages behind the end of the partition",
    ["topic", "partition"],
)

settings = get_settings()
# faust.App, but its consumer never fetches records that faust would then drop (see
# streams/transport.py): without it a restarted worker could stall after recovery.
app = App(
    settings.streams.app_id,
    broker=f"kafka://{kafka_bootstrap(settings)}",
    store="memory://",
    datadir=str(settings.data_dir / "faust"),
    topic_partitions=settings.kafka.partitions,
    topic_replication_factor=settings.kafka.replication_factor,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    # A batch hands the producer thousands of changelog writes at once: large
    # produce requests, a few milliseconds apart, instead of 16 KB ones.
    producer_linger_ms=settings.streams.producer_linger_ms,
    producer_max_batch_size=512 * 1024,
    broker_session_timeout=settings.streams.session_timeout_s,
    fetch_max_wait_ms=settings.streams.fetch_max_wait_ms,
    # Must exceed the batch size, or every batch waits out its time limit; and leave room
    # for what the fetcher already holds when the buffer pauses it, or each of those
    # messages waits for room one by one (at 2x, that cost 10 % of the worker's CPU).
    stream_buffer_maxsize=8 * settings.streams.sink_batch_size,
    web_port=settings.streams.web_port,
    web_bind=settings.streams.web_host,
    web_host=settings.streams.web_host,
)

raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
interactions_topic = app.topic(settings.kafka.interactions_topic, **raw)
items_topic = app.topic(settings.kafka.items_topic, **raw)
dlq_topic = app.topic(settings.kafka.dlq_topic, **raw)
examples_topic_name = settings.kafka.training_examples_topic
history_updates_topic_name = settings.kafka.history_updates_topic
knowledge_topic = app.topic(settings.kafka.knowledge_requests_topic, **raw)

# Keyed like the source topics (user id, item id as text), so co-partitioned.
# Their changelog topics are created beforehand by streams.topics.ensure_topics.
# The sequences are bytes (streams.sequences.encode) under the user id's bytes, so that
# a batch writes their changelog itself (streams/outbox.py).
sequences = app.Table(
    SEQUENCES_TABLE,
    default=None,
    partitions=settings.kafka.partitions,
    key_type=bytes,
    value_type=bytes,
)
known_items = app.Table(KNOWN_ITEMS_TABLE, default=None, partitions=settings.kafka.partitions)

sink = ClickHouseSink(settings)


def dead_letter(message, problem: Problem, now: int) -> events_pb2.DeadLetter:
    """The letter for a refused message: its reason, source position and original bytes,
    cut to `dead_letter_payload_bytes` so that no original, however large, makes a letter
    the producer cannot send (which would stop the partition)."""
    payload = message.value or b""
    keep = settings.streams.dead_letter_payload_bytes
    return events_pb2.DeadLetter(
        payload=payload[:keep],
        reason=str(problem),
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        timestamp_ms=now,
        original_size=len(payload),
        original_sha256=hashlib.sha256(payload).hexdigest(),
        truncated=len(payload) > keep,
    )


def _dead_letter(event: faust.EventT, problem: Problem) -> None:
    message = event.message
    letter = dead_letter(message, problem, now_ms())
    DEAD_LETTERS.labels(message.topic, problem.code).inc()
    dlq_topic.send_soon(key=message.key, value=letter.SerializeToString())


def _decode(event: faust.EventT, message_type):
    """The decoded message, or the problem that stops it being decoded."""
    payload = event.message.value
    if not payload:
        return None, Problem("empty_payload", "the message has no value")
    limit = settings.streams.max_event_bytes
    if len(payload) > limit:
        return None, Problem("oversized", f"payload of {len(payload)} bytes exceeds {limit}")
    try:
        return message_type.FromString(payload), None
    except Exception as error:  # protobuf raises DecodeError and others on garbage
        return None, Problem("undecodable", f"not a {message_type.DESCRIPTOR.name}: {error}")


def _table_set(table: faust.Table, partition: int, key: str, value) -> None:
    """Set a table key from inside a batch.

    `table[key] = value` finds the changelog partition through the stream's
    current event, which a batch (take_events) does not have; the key's
    partition is its source event's, since the table is co-partitioned.
    """
    table.data[key] = value
    table.send_changelog(partition, key, value)


def _track_lag(events: list[faust.EventT]) -> None:
    last = {}
    for event in events:
        last[event.message.tp] = event.message.offset
    for tp, offset in last.items():
        highwater = app.consumer.highwater(tp)
        if highwater is not None:
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(highwater - offset - 1, 0))


async def _valid_events(batch, message_type, check) -> list[tuple[faust.EventT, object]]:
    """Decode and validate a batch; the bad events go to the DLQ with their reason."""
    EVENTS_IN.labels(batch[0].message.topic).inc(len(batch))
    now = now_ms()
    valid = []
    for event in batch:
        try:
            decoded, problem = _decode(event, message_type)
            problem = problem or check(decoded, now, settings.streams)
        except Exception as error:  # whatever the bytes, the partition moves on
            decoded, problem = None, Problem("unhandled", f"{type(error).__name__}: {error}")
        if problem:
            _dead_letter(event, problem)
        else:
            valid.append((event, decoded))
    return valid


def _batches(stream):
    return stream.take_events(
        settings.streams.sink_batch_size, within=settings.streams.sink_flush_interval_s
    )


@contextmanager
def _exit_on_error():
    """An error while handling a batch stops the whole worker.

    faust would restart just the agent and go on acknowledging later offsets,
    committing past the failed batch: its events would be lost. Exiting
    instead leaves the offsets where they were, and the restarted worker
    (Kubernetes, systemd, `streamrec up`) handles the batch again.
    """
    try:
        yield
    except Exception:
        log.exception("handling a batch failed; exiting so that no offset moves past it")
        logging.shutdown()
        os._exit(1)


class _ExampleMessages:
    """One partition's training examples, `size` per message (a message per example
    would cost the producer more than everything else), added in place."""

    def __init__(self, size: int):
        self.size = size
        self.messages = [events_pb2.TrainingExampleBatch()]
        self.count = 0

    def add(self, **fields) -> None:
        if len(self.messages[-1].examples) >= self.size:
            self.messages.append(events_pb2.TrainingExampleBatch())
        self.messages[-1].examples.add(**fields)
        self.count += 1


async def _handle_interactions(batch: list[faust.EventT]) -> None:
    """Validate, store, fold into the user sequences, emit training examples."""
    valid = await _valid_events(batch, events_pb2.InteractionEvent, interaction_problem)
    loop = asyncio.get_running_loop()
    known = await loop.run_in_executor(
        None, sink.stored_event_ids, [decoded.event_id for _, decoded in valid]
    )
    verdicts = first_wins(
        [(event, event.message.partition, event.message.offset, d) for event, d in valid], known
    )
    for (event, *_), problem in verdicts.refused:
        _dead_letter(event, problem)
    REPEATED_EVENTS.inc(len(verdicts.repeats))
    ingested_ms = now_ms()
    rows = interaction_columns([entry[1:] for entry in verdicts.keep], ingested_ms)
    ids = event_id_columns(verdicts.new_ids, ingested_ms)
    # Two executor threads, two connections: the inserts run side by side.
    stored = asyncio.gather(
        loop.run_in_executor(None, sink.write_interactions, rows),
        loop.run_in_executor(None, sink.write_event_ids, ids),
    )

    by_user = defaultdict(list)
    for _, partition, offset, decoded in verdicts.keep:
        by_user[decoded.user_id].append((partition, offset, decoded))
    outbox = Outbox(app)
    examples: dict[int, _ExampleMessages] = {}
    users_by_partition = defaultdict(list)
    size, length = settings.streams.examples_per_message, settings.streams.sequence_length
    for user, user_events in by_user.items():
        partition = user_events[-1][0]
        users_by_partition[partition].append(user)
        if partition not in examples:
            examples[partition] = _ExampleMessages(size)
        key = str(user).encode()
        sequence, _ = apply_events(
            decode_sequence(sequences.data.get(key)),
            [(offset, decoded) for _, offset, decoded in user_events],
            length,
            examples[partition],
        )
        outbox.table_set(sequences, partition, key, encode_sequence(sequence))
    for partition, messages in examples.items():
        for message in messages.messages:
            if message.examples:
                outbox.send(examples_topic_name, None, message.SerializeToString(), partition)
        EXAMPLES_OUT.inc(messages.count)
    for partition, users in users_by_partition.items():
        # Sent with the rest at flush, i.e. once the rows below are readable.
        update = events_pb2.HistoryUpdate(user_ids=users, timestamp_ms=ingested_ms)
        outbox.send(history_updates_topic_name, None, update.SerializeToString(), partition)
    await stored
    await outbox.flush()
    _track_lag(batch)


async def _handle_items(batch: list[faust.EventT]) -> None:
    """Upsert items; an item seen for the first time also asks for LLM knowledge."""
    valid = await _valid_events(batch, events_pb2.ItemEvent, item_problem)
    rows = [item_row(item) for _, item in valid]
    await asyncio.get_running_loop().run_in_executor(None, sink.write_items, rows)
    for event, item in valid:
        key = str(item.item_id)
        if item.deleted or known_items.get(key) is not None:
            continue
        _table_set(known_items, event.message.partition, key, item.timestamp_ms)
        request = events_pb2.KnowledgeRequest(item_id=item.item_id, timestamp_ms=now_ms())
        knowledge_topic.send_soon(key=key.encode(), value=request.SerializeToString())
        NEW_ITEMS.inc()
    _track_lag(batch)


@app.agent(interactions_topic)
async def ingest_interactions(stream):
    async for batch in _batches(stream):
        with _exit_on_error():
            await _handle_interactions(batch)


@app.agent(items_topic)
async def ingest_items(stream):
    async for batch in _batches(stream):
        with _exit_on_error():
            await _handle_items(batch)


@app.page("/metrics")
async def metrics(web, request):
    # aiohttp refuses a charset inside content_type, so the header is set whole.
    return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@app.page("/health")
async def health(web, request):
    return web.json({"status": "ok", "time": time.time()})
