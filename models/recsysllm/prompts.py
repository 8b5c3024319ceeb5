"""P5-style task prompts; some templates are held out of training (zero-shot)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.recsysllm.masking import Segment
from models.recsysllm.textualise import entity

TASKS = ("next_item", "candidates", "rating", "direct", "explanation")


@dataclass(frozen=True)
class Template:
    task: str
    text: str  # {profile}, {history}, {item}, {candidates} are segment lists
    seen: bool = True


TEMPLATES = [
    Template("next_item", "{profile}{history} What will the user watch next?"),
    Template("next_item", "{profile}{history} Predict the next movie for this user:"),
    Template("next_item", "{profile}{history} Which movie comes next in this history?", False),
    Template("candidates", "{profile}{history} Pick the next movie from:{candidates}."),
    Template("candidates", "{profile}{history} Among{candidates}, which one next?", False),
    Template("rating", "{profile}{history} How would the user rate{item} (1-5)?"),
    Template("rating", "{profile}{history} Rating the user gives{item}, 1 to 5:", False),
    Template("direct", "{profile}{history} Should we recommend{item}? Answer yes or no:"),
    Template("direct", "{profile}{history} Would the user enjoy{item}? yes or no:", False),
    Template("explanation", "{profile}{history} Explain why the user rated{item}:"),
    Template("explanation", "{profile}{history} Why did the user choose{item}?", False),
]

_FIELD = re.compile(r"\{(profile|history|item|candidates)\}")


def templates(task: str, seen: bool) -> list[Template]:
    return [t for t in TEMPLATES if t.task == task and t.seen == seen]


def render(template: Template, **fields: list[Segment] | str) -> list[Segment]:
    """The template's text with each field replaced by its segments."""
    segments: list[Segment] = []
    position = 0
    for match in _FIELD.finditer(template.text):
        if match.start() > position:
            segments.append(Segment(template.text[position : match.start()]))
        value = fields[match.group(1)]
        segments.extend([entity(value)] if isinstance(value, str) else value)
        position = match.end()
    if position < len(template.text):
        segments.append(Segment(template.text[position:]))
    return segments


def candidate_segments(titles: list[str]) -> list[Segment]:
    segments: list[Segment] = []
    for index, title in enumerate(titles):
        if index:
            segments.append(Segment(","))
        segments.append(entity(title))
    return segments
