"""Users and behaviour as text whose items and attribute values are entities."""

from __future__ import annotations

import random
from dataclasses import dataclass

from models.recsysllm.masking import Segment


def entity(name: str) -> Segment:
    """An entity segment; the leading space makes its tokens the same in any context
    (the trie is built from the same form)."""
    return Segment(" " + name.strip(), entity=True)


@dataclass(frozen=True)
class UserProfile:
    age: int | None = None
    gender: str | None = None
    occupation: str | None = None


GENDERS = {"M": "male", "F": "female"}


def profile_segments(profile: UserProfile) -> list[Segment]:
    segments = [Segment("The user is")]
    if profile.age is not None:
        segments += [entity(f"{profile.age}-year-old")]
    if profile.gender:
        segments += [entity(GENDERS.get(profile.gender, profile.gender))]
    segments += [entity(profile.occupation or "person"), Segment(".")]
    return segments


def sample_windows(
    history: list[str], budget: int, shares: list[float], rng: random.Random
) -> list[list[str]]:
    """Long-, medium- and short-term picks from a chronological history.

    The history is cut into three consecutive parts (oldest to newest); each part
    contributes its share of the `budget` items, kept in time order, so the
    prompt sees a little of the distant past and mostly recent behaviour.
    """
    if len(history) <= budget:
        cut = [round(len(history) * sum(shares[:k])) for k in range(len(shares) + 1)]
        return [history[cut[k] : cut[k + 1]] for k in range(len(shares))]
    third = len(history) // len(shares)
    parts = [history[k * third : (k + 1) * third] for k in range(len(shares) - 1)]
    parts.append(history[(len(shares) - 1) * third :])
    picks = []
    for part, share in zip(parts, shares, strict=True):
        count = min(len(part), max(1, round(share * budget)))
        chosen = sorted(rng.sample(range(len(part)), count))
        picks.append([part[index] for index in chosen])
    return picks


WINDOW_LEADS = ["Long ago they watched", "Later they watched", "Lately they watched"]


def behaviour_segments(windows: list[list[str]]) -> list[Segment]:
    segments: list[Segment] = []
    for lead, titles in zip(WINDOW_LEADS, windows, strict=False):
        if not titles:
            continue
        segments.append(Segment(" " + lead))
        for index, title in enumerate(titles):
            if index:
                segments.append(Segment(","))
            segments.append(entity(title))
        segments.append(Segment("."))
    return segments
