"""Generated knowledge kept per (item, LLM version, prompt version).

Generation is the slow part of knowledge (seconds per item on a CPU), so a
text is made once per key and read back afterwards: a second run over the
same catalog, or a run resumed after a crash, only generates what is missing.
The item key includes a fingerprint of what the prompt shows, so an item
whose title or genres change is generated again. SQLite (standard library,
one file, safe for several processes) holds it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from models.knowledge.generation import KnowledgeText
from models.knowledge.prompts import ItemInfo

_SCHEMA = """
CREATE TABLE IF NOT EXISTS knowledge (
    item_id INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    llm_version TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    description TEXT NOT NULL,
    summarization TEXT NOT NULL,
    raw TEXT NOT NULL,
    parse TEXT NOT NULL,
    PRIMARY KEY (item_id, fingerprint, llm_version, prompt_version)
)
"""


class KnowledgeCache:
    def __init__(self, path: Path, llm_version: str, prompt_version: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.llm_version = llm_version
        self.prompt_version = prompt_version
        self.hits = self.misses = 0
        self._db = sqlite3.connect(path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get_many(self, items: Sequence[ItemInfo]) -> dict[int, KnowledgeText]:
        """The cached knowledge of those items that have it, by item id; counts hits/misses."""
        found: dict[int, KnowledgeText] = {}
        for item in items:
            row = self._db.execute(
                "SELECT description, summarization, raw, parse FROM knowledge WHERE item_id = ? "
                "AND fingerprint = ? AND llm_version = ? AND prompt_version = ?",
                (item.item_id, item.fingerprint(), self.llm_version, self.prompt_version),
            ).fetchone()
            if row is not None:
                found[item.item_id] = KnowledgeText(item.item_id, *row)
        self.hits += len(found)
        self.misses += len(items) - len(found)
        return found

    def put_many(self, items: Iterable[ItemInfo], texts: Iterable[KnowledgeText]) -> None:
        rows = [
            (
                item.item_id,
                item.fingerprint(),
                self.llm_version,
                self.prompt_version,
                text.description,
                text.summarization,
                text.raw,
                text.parse,
            )
            for item, text in zip(items, texts, strict=True)
        ]
        self._db.executemany(
            "INSERT OR REPLACE INTO knowledge VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()
