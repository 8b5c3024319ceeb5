"""Entity-aware masking and autoregressive blank infilling laid out for a causal LM.

A text is a list of segments, each plain text or one entity (an item title or
an attribute value). Masking works on *units*: an entity is one unit however
many tokens it has, a plain token is a unit of its own, so a masked span never
cuts an entity in two. The corrupted text keeps one mask token per span; the
spans follow it in their original (chronological) order, each opened by a
span-start token and closed by a span-end token, and only they carry a loss.
GLM permutes the spans; a causal LM reading a behaviour sequence gains from
seeing them in time order, so they are not permuted here.

Intra-entity positions (the second position dimension): tokens of an entity
are numbered 1..n, a plain token is 1 (a unit of length one), markers are 0.
The base model's own positions are left as they are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Segment:
    text: str
    entity: bool = False


@dataclass(frozen=True)
class Unit:
    start: int  # token range [start, end) in TokenisedText.ids
    end: int
    entity: bool
    sentence: int


@dataclass
class TokenisedText:
    ids: list[int] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)

    def unit_positions(self, unit: Unit) -> list[int]:
        return list(range(1, unit.end - unit.start + 1))

    def intra_positions(self) -> list[int]:
        positions = []
        for unit in self.units:
            positions.extend(self.unit_positions(unit))
        return positions


def tokenise(tokenizer, segments: list[Segment]) -> TokenisedText:
    """Tokenise segment by segment, so an entity's tokens are the same wherever it
    appears (the trie is built from the same per-entity tokenisation)."""
    text = TokenisedText()
    sentence = 0
    for segment in segments:
        ids = tokenizer.encode(segment.text, add_special_tokens=False)
        start = len(text.ids)
        text.ids.extend(ids)
        if segment.entity:
            if ids:
                text.units.append(Unit(start, start + len(ids), True, sentence))
        else:
            for offset in range(len(ids)):
                text.units.append(Unit(start + offset, start + offset + 1, False, sentence))
            if segment.text.rstrip().endswith((".", "?", "!")):
                sentence += 1
    return text


class MaskLevel(StrEnum):
    ENTITY = "entity"  # a few entities, each its own span
    SENTENCE = "sentence"  # one whole sentence
    DOCUMENT = "document"  # one long span closing the text


def choose_spans(
    text: TokenisedText, level: MaskLevel, rng: random.Random, entity_ratio: float = 0.15
) -> list[tuple[int, int]]:
    """Spans as unit-index ranges [a, b), sorted, never overlapping."""
    units = text.units
    if not units:
        return []
    if level is MaskLevel.ENTITY:
        entities = [index for index, unit in enumerate(units) if unit.entity]
        if not entities:
            return []
        count = max(1, round(entity_ratio * len(entities)))
        return sorted((index, index + 1) for index in rng.sample(entities, count))
    if level is MaskLevel.SENTENCE:
        sentence = rng.choice(sorted({unit.sentence for unit in units}))
        members = [index for index, unit in enumerate(units) if unit.sentence == sentence]
        return [(members[0], members[-1] + 1)]
    start = rng.randint(len(units) // 2, len(units) - 1)
    return [(start, len(units))]


@dataclass
class InfillingExample:
    input_ids: list[int]
    labels: list[int]
    intra_positions: list[int]


def infilling_example(
    text: TokenisedText,
    spans: list[tuple[int, int]],
    mask_id: int,
    span_start_id: int,
    span_end_id: int,
) -> InfillingExample:
    """The corrupted text, then every masked span in order with its markers."""
    spans = sorted(spans)
    starts = {a: b for a, b in spans}
    example = InfillingExample([], [], [])

    def emit(ids, positions, supervised):
        example.input_ids.extend(ids)
        example.intra_positions.extend(positions)
        example.labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))

    index = 0
    while index < len(text.units):
        if index in starts:
            emit([mask_id], [0], False)
            index = starts[index]
            continue
        unit = text.units[index]
        emit(text.ids[unit.start : unit.end], text.unit_positions(unit), False)
        index += 1
    for a, b in spans:
        emit([span_start_id], [0], False)
        for unit in text.units[a:b]:
            emit(text.ids[unit.start : unit.end], text.unit_positions(unit), True)
        emit([span_end_id], [0], True)
    return example


def task_example(
    tokenizer,
    prompt: list[Segment],
    answer: list[Segment],
    mask_id: int,
    span_start_id: int,
    span_end_id: int,
) -> InfillingExample:
    """A task (next item, rating, ...) as infilling: the answer is the one masked
    span, placed where the prompt ends."""
    text = tokenise(tokenizer, prompt + answer)
    answer_units = len(tokenise(tokenizer, answer).units)
    spans = [(len(text.units) - answer_units, len(text.units))] if answer_units else []
    return infilling_example(text, spans, mask_id, span_start_id, span_end_id)


def prompt_context(
    tokenizer, prompt: list[Segment], mask_id: int, span_start_id: int
) -> tuple[list[int], list[int]]:
    """Inference input for a task: the prompt, its mask, and the opened span."""
    text = tokenise(tokenizer, prompt)
    ids = text.ids + [mask_id, span_start_id]
    return ids, text.intra_positions() + [0, 0]
