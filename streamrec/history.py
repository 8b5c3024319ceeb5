"""Per-user interaction histories read from ClickHouse (serving and workers use them).

Within a millisecond, rows keep their arrival order (the source offset).
Rows are deduplicated with FINAL: the interactions table collapses rows with
the same (user_id, timestamp_ms, event_id), and FINAL applies that collapse
at read time for parts not merged yet, so a redelivered event never shows
twice. Every query is parameterised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamrec.db import connect
from streamrec.settings import Settings


@dataclass(frozen=True)
class HistoryEntry:
    item_id: int
    timestamp_ms: int
    event_type: int
    value: float | None


class HistoryStore:
    """Recent items per user, oldest first, from the `interactions` table."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client = connect(settings)

    def close(self) -> None:
        self._client.disconnect()

    def recent(self, user_id: int, n: int) -> list[HistoryEntry]:
        return self.batch_recent([user_id], n).get(user_id, [])

    def batch_recent(self, user_ids: Iterable[int], n: int) -> dict[int, list[HistoryEntry]]:
        """The last `n` interactions of each user (users without any are absent)."""
        users = sorted({int(u) for u in user_ids})
        if not users or n <= 0:
            return {}
        rows = self._client.execute(
            "SELECT user_id, item_id, timestamp_ms, event_type, value "
            "FROM interactions FINAL "
            "WHERE user_id IN %(users)s "
            "ORDER BY user_id, timestamp_ms DESC, source_offset DESC "
            "LIMIT %(n)s BY user_id",
            {"users": tuple(users), "n": int(n)},
        )
        histories: dict[int, list[HistoryEntry]] = {}
        for user_id, item_id, timestamp_ms, event_type, value in rows:
            histories.setdefault(user_id, []).append(
                HistoryEntry(item_id, timestamp_ms, event_type, value)
            )
        for entries in histories.values():
            entries.reverse()
        return histories

    def batch_seen(self, user_ids: Iterable[int]) -> dict[int, tuple[list[int], int]]:
        """Every item each user ever interacted with (once each), and the time of the
        user's newest interaction (users without any are absent): the seen items that
        serving leaves out, however long the history."""
        users = sorted({int(u) for u in user_ids})
        if not users:
            return {}
        rows = self._client.execute(
            "SELECT user_id, groupUniqArray(item_id), max(timestamp_ms) "
            "FROM interactions WHERE user_id IN %(users)s GROUP BY user_id",
            {"users": tuple(users)},
        )
        return {user: (list(items), newest) for user, items, newest in rows}
