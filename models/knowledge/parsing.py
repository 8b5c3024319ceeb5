"""Reading the JSON an LLM writes, which is often not quite JSON.

Small LLMs wrap the object in chat ("Sure! Here is..."), in code fences, stop
mid-string when the token budget runs out, or forget quotes. `parse_knowledge`
tries, in order: the whole text as JSON ("json"); the first JSON object inside
it, the same object closed after truncation, or a lenient key-by-key read
("repaired"); and when no field can be found, the text itself as the
description ("raw"). The `how` of every parse is kept, so a run can report how
much of its knowledge came from each path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

JSON, REPAIRED, RAW = "json", "repaired", "raw"
PARSE_OUTCOMES = (JSON, REPAIRED, RAW)

# An LLM spells the keys many ways ("desc", "summary", "summary_text"): a key naming
# either stem counts as that field.
_STEMS = (("desc", "description"), ("summ", "summarization"))
_KEY_NAME = r"\w*(?:desc|summ)\w*"
_KEY_RE = re.compile(r"[\"']?(?P<key>" + _KEY_NAME + r")[\"']?\s*[:=]\s*", re.IGNORECASE)
_NEXT_KEY = r"[\"']?" + _KEY_NAME + r"[\"']?\s*[:=]"
_FENCE_RE = re.compile(r"```[a-zA-Z]*\s*(.*?)(?:```|$)", re.DOTALL)
_CLOSERS = {"{": "}", "[": "]"}


@dataclass(frozen=True)
class ParsedKnowledge:
    description: str
    summarization: str
    how: str  # "json", "repaired" or "raw"

    @property
    def text(self) -> str:
        """What gets encoded: the description, then the summarization."""
        return " ".join(part for part in (self.description, self.summarization) if part)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list):
        return " ".join(_as_text(part) for part in value)
    if value is None:
        return ""
    return _as_text(json.dumps(value, ensure_ascii=False))


def _field_of(key: str) -> str | None:
    key = key.strip().lower()
    return next((field for stem, field in _STEMS if stem in key), None)


def _fields(obj: object) -> dict[str, str]:
    """The known fields of a decoded object that hold some text."""
    if not isinstance(obj, dict):
        return {}
    found: dict[str, str] = {}
    for key, value in obj.items():
        field = _field_of(str(key))
        text = _as_text(value)
        if field and text and field not in found:
            found[field] = text
    return found


def _objects(text: str) -> dict[str, str]:
    """The fields of the complete JSON objects anywhere in the text (an LLM sometimes writes
    one object per field); the first object naming a field wins."""
    decoder = json.JSONDecoder()
    found: dict[str, str] = {}
    start = text.find("{")
    while start >= 0:
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            end = start + 1
        else:
            found = {**_fields(obj), **found}
        start = text.find("{", end)
    return found


def answer_complete(text: str, max_objects: int = 2) -> bool:
    """Whether an answer being generated can stop: its complete objects hold both fields,
    or it has closed `max_objects` objects (what follows is chat)."""
    return len(_objects(text)) == len(_STEMS) or text.count("}") >= max_objects


def _closed(text: str) -> dict[str, str]:
    """The object from the first brace, with an unterminated string and brackets closed
    (an answer cut off by the token budget), and a dangling key or comma dropped."""
    start = text.find("{")
    if start < 0:
        return {}
    body, stack, in_string, escaped = text[start:], [], False, False
    for char in body:
        if in_string:
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char in "}]" and stack:
            stack.pop()
    if escaped:
        body = body[:-1]
    if in_string:
        body += '"'
    body = re.sub(r'(,\s*"[^"]*"\s*:?\s*|,\s*|:\s*)$', "", body)
    try:
        return _fields(json.loads(body + "".join(reversed(stack))))
    except ValueError:
        return {}


def _lenient(text: str) -> dict[str, str]:
    """Key-by-key: `key: value` with the key or value quoted, single-quoted or bare."""
    found: dict[str, str] = {}
    for match in _KEY_RE.finditer(text):
        field = _field_of(match.group("key"))
        rest = text[match.end() :]
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            # The closing quote is the one followed by a separator or the next key, so a
            # quote inside the value (a title in quotes) does not end it.
            end = re.search(
                re.escape(quote) + r"\s*(?=[,}\]]|$|" + _NEXT_KEY + ")", rest[1:], re.IGNORECASE
            )
            value = rest[1 : 1 + end.start()] if end else rest[1:]
        else:
            end = re.search(r"[}\]\n]|,\s*" + _NEXT_KEY, rest, re.IGNORECASE)
            value = rest[: end.start()] if end else rest
        value = value.replace('\\"', '"').replace("\\n", " ").strip().rstrip(",").strip()
        if value and field not in found:
            found[field] = _as_text(value)
    return found


def parse_knowledge(raw: str) -> ParsedKnowledge:
    """The description and summarization in an LLM's answer, and how they were read."""
    stripped = raw.strip()
    try:
        strict = _fields(json.loads(stripped))
    except ValueError:
        strict = {}
    if strict:
        return ParsedKnowledge(strict.get("description", ""), strict.get("summarization", ""), JSON)
    fenced = _FENCE_RE.search(stripped)
    candidates = [fenced.group(1), stripped] if fenced else [stripped]
    # Each reader fills in what the stricter ones before it missed.
    found: dict[str, str] = {}
    for reader in (_objects, _closed, _lenient):
        for candidate in candidates:
            found = {**reader(candidate), **found}
    if found:
        return ParsedKnowledge(
            found.get("description", ""), found.get("summarization", ""), REPAIRED
        )
    return ParsedKnowledge(_as_text(candidates[0]), "", RAW)
