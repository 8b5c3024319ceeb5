"""Recent histories and seen-item sets from ClickHouse, behind caches.

The recent history (what the model reads) is cached per user until the stream
worker says, on `history-updates`, that the user's new events are stored
(serving/history_updates.py): a user who just clicked sees it reflected in the
next answer, and a user who did nothing costs no ClickHouse read. While that
topic is not heard, entries live only `history_cache_ttl_s` (seconds). The seen
set (every item of the user's whole history, which serving leaves out) is read
once per user and then kept current by those recent reads: a re-read window that
overlaps what the set holds adds its new items; one that may have skipped events
(more new events than the window holds) drops the set, to be read again. A user
whose whole history fits the window needs no second query at all. Cache misses
of concurrent requests are read in one `IN (...)` query (micro-batched), each
reader on its own connection in its own thread, as clickhouse-driver requires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from serving.batching import MicroBatcher
from serving.history_updates import HistoryUpdates
from serving.kit import DeadlinePassed
from streamrec.history import HistoryEntry, HistoryStore
from streamrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    items: frozenset[int]
    newest_ms: int  # the newest interaction the set holds
    expires: float


class HistoryCache:
    """`await cache.items(user_id)` -> the user's last item ids, oldest first;
    `await cache.seen(user_id)` -> every item id the user ever interacted with."""

    def __init__(self, settings: Settings, store: HistoryStore | None = None):
        serving = settings.serving
        self.length = serving.history_length
        self.ttl_s = serving.history_cache_ttl_s
        self.updated_ttl_s = serving.history_updates_ttl_s
        self.capacity = serving.history_cache_size
        self.seen_ttl_s = serving.seen_cache_ttl_s
        self.seen_capacity = serving.seen_cache_size
        self.read_budget_s = serving.history_read_min_ms / 1000
        self._store = store
        self._seen_store: HistoryStore | None = None
        self._settings = settings
        self._entries: OrderedDict[int, tuple[float, list[int]]] = OrderedDict()
        self._seen: OrderedDict[int, _Seen] = OrderedDict()
        # Users being read now, and those of them an update named meanwhile: such a read
        # may predate the new events, so its answer is used but not cached.
        self._reading: dict[int, int] = {}
        self._changed_while_read: set[int] = set()
        self.updates = HistoryUpdates(settings, self.forget) if self.updated_ttl_s > 0 else None
        wait_s = serving.max_wait_ms / 1000
        self._reader = MicroBatcher(self._read, serving.max_batch, wait_s, stage="history")
        self._seen_reader = MicroBatcher(self._read_seen, serving.max_batch, wait_s, stage="seen")
        self.hits = 0
        self.misses = 0
        self.seen_reads = 0  # users whose whole seen set was read from ClickHouse

    def _read(self, user_ids: Sequence[int]) -> list[list[HistoryEntry]]:
        if self._store is None:  # connect in the reader thread that will use the connection
            self._store = HistoryStore(self._settings)
        found = self._store.batch_recent(user_ids, self.length)
        return [found.get(user, []) for user in user_ids]

    def _read_seen(self, user_ids: Sequence[int]) -> list[tuple[list[int], int]]:
        if self._seen_store is None:
            self._seen_store = HistoryStore(self._settings)
        found = self._seen_store.batch_seen(user_ids)
        return [found.get(user, ([], 0)) for user in user_ids]

    async def items(self, user_id: int, context=None) -> list[int]:
        """The recent history; with the call's `context`, DeadlinePassed instead of a
        ClickHouse read when less than `serving.history_read_min_ms` is left."""
        if self.ttl_s > 0:
            entry = self._entries.get(user_id)
            if entry is not None and entry[0] > time.monotonic():
                self._entries.move_to_end(user_id)
                self.hits += 1
                return entry[1]
        self._check_budget(context)
        self.misses += 1
        self._reading[user_id] = self._reading.get(user_id, 0) + 1
        try:
            window = await self._reader.submit(user_id)
        finally:
            left = self._reading.pop(user_id) - 1
            if left:
                self._reading[user_id] = left
            changed = user_id in self._changed_while_read
            if not left:
                self._changed_while_read.discard(user_id)
        self._merge_seen(user_id, window)
        items = [entry.item_id for entry in window]
        if self.ttl_s > 0 and not changed:
            self._entries[user_id] = (time.monotonic() + self._ttl(), items)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return items

    def _ttl(self) -> float:
        listening = self.updates is not None and self.updates.listening.is_set()
        return self.updated_ttl_s if listening else self.ttl_s

    def forget(self, user_ids: Sequence[int]) -> None:
        """Drop the cached recent histories of these users (their new events are stored);
        the next read of each also brings its seen set up to date."""
        for user_id in user_ids:
            self._entries.pop(user_id, None)
            if user_id in self._reading:
                self._changed_while_read.add(user_id)

    async def seen(self, user_id: int, context=None) -> frozenset[int]:
        entry = self._seen.get(user_id)
        if entry is not None and entry.expires > time.monotonic():
            self._seen.move_to_end(user_id)
            return entry.items
        self._check_budget(context)
        self.seen_reads += 1
        items, newest_ms = await self._seen_reader.submit(user_id)
        return self._remember_seen(user_id, frozenset(items), newest_ms)

    def _check_budget(self, context) -> None:
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None and remaining < self.read_budget_s:
            raise DeadlinePassed()

    def _merge_seen(self, user_id: int, window: list[HistoryEntry]) -> None:
        """Keep the user's seen set current with a freshly read recent window."""
        if len(window) < self.length:  # the window is the whole history
            newest = window[-1].timestamp_ms if window else 0
            self._remember_seen(user_id, frozenset(e.item_id for e in window), newest)
            return
        entry = self._seen.get(user_id)
        if entry is None:
            return
        if window[0].timestamp_ms <= entry.newest_ms:  # overlaps: nothing was skipped
            entry.items = entry.items.union(e.item_id for e in window)
            entry.newest_ms = max(entry.newest_ms, window[-1].timestamp_ms)
        else:
            del self._seen[user_id]

    def _remember_seen(self, user_id: int, items: frozenset[int], newest_ms: int):
        self._seen[user_id] = _Seen(items, newest_ms, time.monotonic() + self.seen_ttl_s)
        self._seen.move_to_end(user_id)
        while len(self._seen) > self.seen_capacity:
            self._seen.popitem(last=False)
        return items

    async def warm(self) -> None:
        """Start hearing history updates, and connect both readers now (in their threads),
        so that a client's first call does not pay for the connections; ClickHouse down is
        a warning (reads connect later)."""
        if self.updates is not None:
            self.updates.start(asyncio.get_running_loop())
        try:
            await self._reader.submit(0)
            await self._seen_reader.submit(0)
        except Exception as error:
            log.warning("history reads not warmed up: %s", error)

    async def close(self) -> None:
        if self.updates is not None:
            await self.updates.stop()
        await self._reader.close()
        await self._seen_reader.close()
        for store in (self._store, self._seen_store):
            if store is not None:
                store.close()
