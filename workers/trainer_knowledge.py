"""The knowledge channels' rows of the items the online trainer adds to its model.

The LLM channel: the newest `item_knowledge` row of the LLM and prompt versions the
model's LLM channel was made with (what its registry version records), zeros where the
knowledge job has not written one yet. Rows of another LLM, of the catalog's facts, or
of the single-vector layout are other vectors and never fill it. The facts channel: the
item's facts from the catalog's `items` row encoded alone, as the knowledge job's
`extend_items` gives them (`workers.knowledge_job.facts_vectors`), with or without LLM
text for the item.
"""

from __future__ import annotations

import logging

import torch

from streamrec.db import connect
from streamrec.settings import Settings

log = logging.getLogger(__name__)

# Where a registry version keeps both channels' provenance (see docs/knowledge.md).
CHANNELS_KEY = "knowledge_channels"
# What the trainer's versions carry over from the version they were trained from: the
# item tables' provenance does not change when the trainer fine-tunes.
INHERITED_KEYS = (CHANNELS_KEY, "prompt_version")


def inherited_provenance(metadata: dict) -> dict:
    return {key: metadata[key] for key in INHERITED_KEYS if metadata.get(key)}


def llm_rows_version(metadata: dict) -> tuple[str, str] | None:
    """(llm_version, prompt_version) of the `item_knowledge` rows that hold a model's LLM
    channel, from its version's `knowledge_channels["llm"]`, else its `llm_version` and
    `prompt_version`; None when neither says both. A template's version (a knowledge
    folder's) names the job's rows of that template (`rows_version`)."""
    from workers.knowledge_job import VECTOR_LAYOUT, rows_version

    channel = (metadata.get(CHANNELS_KEY) or {}).get("llm") or {}
    if not (channel.get("llm_version") and channel.get("prompt_version")):
        channel = metadata
    llm, prompt = channel.get("llm_version"), channel.get("prompt_version")
    if not (llm and prompt):
        return None
    return llm, prompt if prompt.endswith(f"+{VECTOR_LAYOUT}") else rows_version(prompt)


def llm_vectors(
    client, items: list[int], version: tuple[str, str] | None, dim: int
) -> torch.Tensor:
    """Each item's newest LLM-channel vector of `version`; zeros where none (or no version)."""
    vectors = torch.zeros(len(items), dim)
    if version is None:
        return vectors
    rows = client.execute(
        "SELECT item_id, argMax(vector, created_ms) FROM item_knowledge "
        "WHERE item_id IN %(items)s AND llm_version = %(llm)s AND prompt_version = %(prompt)s "
        "GROUP BY item_id",
        {"items": tuple(items), "llm": version[0], "prompt": version[1]},
    )
    position = {item: row for row, item in enumerate(items)}
    for item, vector in rows:
        if len(vector) == dim:
            vectors[position[item]] = torch.tensor(vector)
    return vectors


class NewItemKnowledge:
    """Both channels' rows for new items; the text encoder is loaded on first need."""

    def __init__(self, settings: Settings, device: str, encoder=None):
        self.settings = settings
        self.device = device
        self.encoder = encoder

    def rows(
        self, items: list[int], knowledge_dim: int | None, facts_dim: int | None, metadata: dict
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(LLM channel rows, facts rows) of `items` for a model with those channel widths
        and that version metadata; None for a channel the model lacks or whose rows cannot
        be made (another encoder: its facts rows stay zero)."""
        if knowledge_dim is None and facts_dim is None:
            return None, None
        client = connect(self.settings)
        try:
            knowledge = None
            if knowledge_dim is not None:
                knowledge = llm_vectors(client, items, llm_rows_version(metadata), knowledge_dim)
            facts = None if facts_dim is None else self._facts(client, items, facts_dim, metadata)
        finally:
            client.disconnect()
        return knowledge, facts

    def _facts(self, client, items: list[int], dim: int, metadata: dict) -> torch.Tensor | None:
        from workers.knowledge_job import facts_vectors
        from workers.knowledge_pipeline import load_encoder

        if self.encoder is None:
            self.encoder = load_encoder(self.settings, device=self.device)
        recorded = ((metadata.get(CHANNELS_KEY) or {}).get("facts") or {}).get("encoder")
        if self.encoder.dim != dim or (recorded and recorded != self.encoder.name):
            log.warning(
                "the text encoder %s (%d-dim) did not make this model's %d-dim facts (%s): "
                "new items get zero facts rows",
                self.encoder.name,
                self.encoder.dim,
                dim,
                recorded or "encoder not recorded",
            )
            return None
        return facts_vectors(self.settings, client, items, self.encoder)
