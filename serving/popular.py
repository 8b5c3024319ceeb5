"""Cold start: the most interacted items of the recent past, refreshed in the background.

"Recent" is a window before the newest stored interaction (not before now), so
a replayed dataset with old timestamps still has a popular list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from streamrec.db import connect
from streamrec.settings import Settings

log = logging.getLogger(__name__)

POPULAR_QUERY = (
    "SELECT item_id, count() AS n FROM interactions "
    "WHERE timestamp_ms >= (SELECT max(timestamp_ms) FROM interactions) - %(window_ms)s "
    "GROUP BY item_id ORDER BY n DESC, item_id LIMIT %(limit)s"
)


class PopularItems:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.items: list[tuple[int, float]] = []  # (item id, share of the window's interactions)
        self._task: asyncio.Task | None = None

    def read(self) -> list[tuple[int, float]]:
        serving = self.settings.serving
        client = connect(self.settings)
        try:
            rows = client.execute(
                POPULAR_QUERY,
                {"window_ms": int(serving.popular_window_s * 1000), "limit": serving.popular_size},
            )
        finally:
            client.disconnect()
        total = sum(n for _, n in rows) or 1
        return [(int(item), n / total) for item, n in rows]

    async def refresh(self) -> None:
        try:
            self.items = await asyncio.to_thread(self.read)
        except Exception as error:
            log.warning("popular items not refreshed: %s", error)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.serving.popular_refresh_s)
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def rank(
        self, k: int, excluded: set[int], candidates: Iterable[int] = ()
    ) -> list[tuple[int, float]]:
        """The top `k` popular items not excluded; only among `candidates` when given
        (candidates never seen in the window follow, in the order given, scored 0)."""
        candidates = list(dict.fromkeys(candidates))
        if candidates:
            allowed = set(candidates) - excluded
            share = dict(self.items)
            ranked = sorted(allowed, key=lambda i: (-share.get(i, 0.0), candidates.index(i)))
            return [(i, share.get(i, 0.0)) for i in ranked[:k]]
        return [(i, s) for i, s in self.items if i not in excluded][:k]
