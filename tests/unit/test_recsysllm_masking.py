"""Entity-aware masking and the causal blank-infilling layout."""

from __future__ import annotations

import random

import pytest

from models.recsysllm.masking import (
    IGNORE_INDEX,
    MaskLevel,
    Segment,
    choose_spans,
    infilling_example,
    task_example,
    tokenise,
)
from models.recsysllm.textualise import (
    UserProfile,
    behaviour_segments,
    entity,
    profile_segments,
    sample_windows,
)
from tests.unit.recsysllm_helpers import tokenizer

MASK, START, END = 90001, 90002, 90003


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def sample_text(tok):
    titles = ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)", "Babe (1995)", "Casino (1995)"]
    segments = profile_segments(UserProfile(24, "M", "technician"))
    segments += behaviour_segments(sample_windows(titles, 20, [0.1, 0.3, 0.6], random.Random(0)))
    return tokenise(tok, segments)


def test_intra_entity_positions_match_a_hand_built_example(tok):
    segments = [Segment("The user watched"), entity("Toy Story (1995)"), Segment(" and")]
    text = tokenise(tok, segments)
    plain = tok.encode("The user watched", add_special_tokens=False)
    title = tok.encode(" Toy Story (1995)", add_special_tokens=False)
    tail = tok.encode(" and", add_special_tokens=False)
    assert text.ids == plain + title + tail
    assert len(title) > 1
    assert text.intra_positions() == [1] * len(plain) + list(range(1, len(title) + 1)) + [1]


def fill_masks(example, context_length):
    """Put each span back where its mask stands, in order."""
    context = example.input_ids[:context_length]
    spans, current = [], None
    for token in example.input_ids[context_length:]:
        if token == START:
            current = []
        elif token == END:
            spans.append(current)
        else:
            current.append(token)
    restored, queue = [], iter(spans)
    for token in context:
        restored.extend(next(queue) if token == MASK else [token])
    return restored, spans


@pytest.mark.parametrize("level", list(MaskLevel))
def test_masking_never_splits_an_entity_and_keeps_spans_in_order(tok, level):
    text = sample_text(tok)
    entities = [text.ids[u.start : u.end] for u in text.units if u.entity]
    boundaries = {u.start for u in text.units} | {len(text.ids)}
    for seed in range(40):
        spans = choose_spans(text, level, random.Random(seed))
        assert spans
        example = infilling_example(text, spans, MASK, START, END)
        context_length = example.input_ids.index(START)
        restored, filled = fill_masks(example, context_length)
        assert restored == text.ids  # spans follow in chronological order
        for a, b in spans:
            assert text.units[a].start in boundaries and text.units[b - 1].end in boundaries
        if level is MaskLevel.ENTITY:
            assert all(span in entities for span in filled)
        # The loss is on the spans and their end markers only.
        pairs = zip(example.input_ids, example.labels, strict=True)
        supervised = [token for token, label in pairs if label != IGNORE_INDEX]
        assert supervised == [t for span in filled for t in span + [END]]
        assert len(example.intra_positions) == len(example.input_ids)


def test_span_tokens_keep_their_intra_entity_positions(tok):
    text = tokenise(tok, [Segment("Seen"), entity("Toy Story (1995)"), Segment(".")])
    entity_index = next(i for i, u in enumerate(text.units) if u.entity)
    example = infilling_example(text, [(entity_index, entity_index + 1)], MASK, START, END)
    start = example.input_ids.index(START)
    width = text.units[entity_index].end - text.units[entity_index].start
    assert example.intra_positions[start : start + width + 2] == [0, *range(1, width + 1), 0]


def test_a_task_answer_is_the_masked_span_at_the_end(tok):
    prompt = [Segment("What next?")]
    example = task_example(tok, prompt, [entity("Heat (1995)")], MASK, START, END)
    answer = tok.encode(" Heat (1995)", add_special_tokens=False)
    assert example.input_ids == tok.encode("What next?", add_special_tokens=False) + [
        MASK,
        START,
        *answer,
        END,
    ]


def test_windows_are_long_medium_and_short_term_in_time_order():
    history = [f"m{i}" for i in range(100)]
    long, medium, short = sample_windows(history, 20, [0.1, 0.3, 0.6], random.Random(1))
    assert (len(long), len(medium), len(short)) == (2, 6, 12)
    picked = [int(t[1:]) for t in long + medium + short]
    assert picked == sorted(picked)
    assert max(int(t[1:]) for t in long) < 33 <= min(int(t[1:]) for t in short)
