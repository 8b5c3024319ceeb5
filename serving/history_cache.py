"""Recent histories from ClickHouse behind a short TTL cache.

The TTL is short (seconds): a user who just clicked sees it reflected as soon
as the stream worker has stored the event and the entry expires. Cache misses
of concurrent requests are read in one `IN (...)` query (micro-batched), and
all reads use one connection from one thread, as clickhouse-driver requires.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from serving.batching import MicroBatcher
from streamrec.history import HistoryStore
from streamrec.settings import Settings


class HistoryCache:
    """`await cache.items(user_id)` -> the user's last item ids, oldest first."""

    def __init__(self, settings: Settings, store: HistoryStore | None = None):
        serving = settings.serving
        self.length = serving.history_length
        self.ttl_s = serving.history_cache_ttl_s
        self.capacity = serving.history_cache_size
        self._store = store
        self._settings = settings
        self._entries: OrderedDict[int, tuple[float, list[int]]] = OrderedDict()
        self._reader = MicroBatcher(
            self._read, serving.max_batch, serving.max_wait_ms / 1000, stage="history"
        )
        self.hits = 0
        self.misses = 0

    def _read(self, user_ids: Sequence[int]) -> list[list[int]]:
        if self._store is None:  # connect in the reader thread that will use the connection
            self._store = HistoryStore(self._settings)
        found = self._store.batch_recent(user_ids, self.length)
        return [[entry.item_id for entry in found.get(user, [])] for user in user_ids]

    async def items(self, user_id: int) -> list[int]:
        if self.ttl_s > 0:
            entry = self._entries.get(user_id)
            if entry is not None and entry[0] > time.monotonic():
                self._entries.move_to_end(user_id)
                self.hits += 1
                return entry[1]
        self.misses += 1
        items = await self._reader.submit(user_id)
        if self.ttl_s > 0:
            self._entries[user_id] = (time.monotonic() + self.ttl_s, items)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return items

    async def close(self) -> None:
        await self._reader.close()
        if self._store is not None:
            self._store.close()
