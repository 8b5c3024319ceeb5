"""Knowledge prompts: the SeRALM prompt, one template per item domain, each with a version.

The LLM gets the item as a small JSON object (title, year, genres or
categories) and is asked for JSON with two fields, "description" (what the
item is) and "summarization" (who would enjoy it), the two halves of the
paper's knowledge. The version is part of every cache key and every
`item_knowledge` row, so changing a template's wording regenerates its items:
the version string carries a digest of the wording itself, which a forgotten
revision bump cannot leave stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ItemInfo:
    """What the prompt knows about an item; `attributes` holds any other catalog fields."""

    item_id: int
    title: str
    year: int | None = None
    categories: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Changes when anything the prompt shows changes (a renamed item is regenerated)."""
        payload = json.dumps(
            [self.title, self.year, list(self.categories), sorted(self.attributes.items())]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PromptTemplate:
    """One domain's prompt. `response_prefix` opens the assistant's answer, so that even a
    small LLM starts writing the JSON object instead of a preamble."""

    domain: str
    revision: int
    noun: str  # "movie", "book", "item"
    category_field: str  # the JSON key the categories go under
    system: str
    instruction: str  # formatted with {noun} and {item_json}
    response_prefix: str = '{"description": "'
    # The encoded document opens with the item's own facts (`document`).
    facts_in_document: bool = True

    @property
    def version(self) -> str:
        wording = json.dumps(
            [
                self.noun,
                self.category_field,
                self.system,
                self.instruction,
                self.response_prefix,
                self.facts_in_document,
            ]
        )
        digest = hashlib.sha256(wording.encode()).hexdigest()[:8]
        return f"{self.domain}-v{self.revision}-{digest}"

    def item_json(self, item: ItemInfo) -> str:
        fields: dict[str, object] = {"title": item.title}
        if item.year is not None:
            fields["year"] = item.year
        if item.categories:
            fields[self.category_field] = list(item.categories)
        fields.update(item.attributes)
        return json.dumps(fields, ensure_ascii=False)

    def facts(self, item: ItemInfo) -> str:
        """The item as one plain sentence: "Heat (1995). Genres: Action, Thriller."."""
        name = item.title if item.year is None else f"{item.title} ({item.year})"
        if not item.categories:
            return f"{name}."
        label = self.category_field.capitalize()
        return f"{name}. {label}: {', '.join(item.categories)}."

    def document(self, item: ItemInfo, knowledge: str) -> str:
        """What the text encoder reads for an item: its facts, then the LLM's knowledge.

        An ID recommender sees no attributes, and a small LLM often writes a generic
        answer that names neither the title nor the genres; opening with the facts keeps
        them in the vector, and the LLM's text adds what it knows beyond them. Alignment
        changes only the knowledge part. The facts stay short, so the encoder's length
        limit cuts the knowledge's tail, never the facts.
        """
        if not self.facts_in_document:
            return knowledge
        return f"{self.facts(item)} {knowledge}".strip()

    def messages(self, item: ItemInfo) -> list[dict[str, str]]:
        """Chat messages for the tokenizer's chat template."""
        return self.messages_with(self.item_json(item))

    def messages_with(self, item_json: str) -> list[dict[str, str]]:
        """The messages around any item JSON (the generator finds the shared prefix so)."""
        user = self.instruction.format(noun=self.noun, item_json=item_json)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


_SYSTEM = "You are a knowledgeable assistant who answers only with valid JSON."
_INSTRUCTION = (
    "Here is a {noun} as JSON: {item_json}\n"
    "Describe this {noun} and say what kind of people would enjoy it. Answer with one JSON "
    'object with two string fields: "description" (a few sentences on what the {noun} is '
    'about) and "summarization" (one sentence on who would like it and why).'
)

TEMPLATES: dict[str, PromptTemplate] = {
    "movies": PromptTemplate("movies", 2, "movie", "genres", _SYSTEM, _INSTRUCTION),
    "books": PromptTemplate("books", 2, "book", "categories", _SYSTEM, _INSTRUCTION),
    "generic": PromptTemplate("generic", 2, "item", "categories", _SYSTEM, _INSTRUCTION),
}


def template_for(domain: str) -> PromptTemplate:
    """The template of a domain: movies, books or generic."""
    try:
        return TEMPLATES[domain]
    except KeyError:
        raise ValueError(
            f"no knowledge prompt for domain {domain!r}; known: {', '.join(TEMPLATES)}"
        ) from None
