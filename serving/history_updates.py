"""Hears which users' stored histories just changed, so that cached ones can live long.

The stream worker names, on `kafka.history_updates_topic`, the users of each batch once
the batch's rows are readable in ClickHouse. A server that hears those names can keep
a user's history cached until the user does something, instead of re-reading it every
couple of seconds for the sake of freshness: the users an app asks about are mostly not
the ones acting at that moment.

No consumer group: every replica hears every update, from the end of the topic (only
updates after the start matter, since the cache starts empty). kafka-python blocks, so
the consumer runs in a thread and hands each poll's users to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from streamrec.settings import Settings

log = logging.getLogger(__name__)


class HistoryUpdates:
    """`start(loop)` runs the listener; `on_users(user_ids)` is called on that loop.
    `listening` is set once the consumer sits at the end of every partition."""

    def __init__(self, settings: Settings, on_users: Callable[[list[int]], None]):
        self.settings = settings
        self.on_users = on_users
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="history-updates", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self.listening.clear()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from streamrec.services import kafka_bootstrap
        from streamrec.v1 import events_pb2

        topic = self.settings.kafka.history_updates_topic
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=kafka_bootstrap(self.settings), enable_auto_commit=False
            )
        except Exception as error:
            log.warning("not listening on %s (%s): histories cached briefly", topic, error)
            return
        try:
            partitions = None
            while partitions is None and not self._stop.wait(0.5):
                partitions = consumer.partitions_for_topic(topic)  # None until it exists
            if partitions is None:
                return
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_end(*assigned)
            for partition in assigned:
                consumer.position(partition)  # fixes "the end" now: later updates are heard
            self.listening.set()
            while not self._stop.is_set():
                users = [
                    user
                    for records in consumer.poll(timeout_ms=200).values()
                    for record in records
                    for user in events_pb2.HistoryUpdate.FromString(record.value).user_ids
                ]
                if users:
                    loop.call_soon_threadsafe(self.on_users, users)
        except Exception:
            log.exception("%s listener stopped: histories cached briefly", topic)
        finally:
            self.listening.clear()
            consumer.close()
