"""The multi-task training set and task prompts, from plain histories.

Histories are chronological lists of item ids with their titles in `titles`;
the worker turns a dataset into these, the server turns ClickHouse histories
into them, so both write the same prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from models.recsysllm.masking import (
    InfillingExample,
    MaskLevel,
    Segment,
    choose_spans,
    infilling_example,
    prompt_context,
    task_example,
    tokenise,
)
from models.recsysllm.prompts import Template, candidate_segments, render, templates
from models.recsysllm.textualise import (
    UserProfile,
    behaviour_segments,
    entity,
    profile_segments,
    sample_windows,
)

RATINGS = ("1", "2", "3", "4", "5")


@dataclass
class UserHistory:
    profile: UserProfile
    items: list[int]  # chronological item ids
    ratings: list[float | None]
    # Review text per item where the data has it (Amazon 5-core); empty otherwise.
    reviews: list[str | None] = field(default_factory=list)


class TaskWriter:
    def __init__(
        self,
        tokenizer,
        marker_ids,
        titles: dict[int, str],
        prompt_items,
        windows,
        explanation_tokens: int = 48,
    ):
        self.tokenizer = tokenizer
        self.explanation_tokens = explanation_tokens
        self.mask_id, self.span_start_id, self.span_end_id = marker_ids
        self.titles = titles
        self.prompt_items = prompt_items
        self.windows = windows

    def shortened(self, text: str) -> str:
        """The review's first `explanation_tokens` tokens: the length the server generates."""
        ids = self.tokenizer.encode(text.strip(), add_special_tokens=False)
        return self.tokenizer.decode(ids[: self.explanation_tokens]).strip()

    def entity_tokens(self, name: str) -> list[int]:
        return self.tokenizer.encode(entity(name).text, add_special_tokens=False)

    def context(self, profile: UserProfile, items: list[int], rng: random.Random) -> dict:
        titles = [self.titles[i] for i in items if i in self.titles]
        windows = sample_windows(titles, self.prompt_items, self.windows, rng)
        return {"profile": profile_segments(profile), "history": behaviour_segments(windows)}

    def prompt(self, template: Template, context: dict, **fields) -> list[Segment]:
        return render(template, **context, **fields)

    def inference_input(self, prompt: list[Segment]) -> tuple[list[int], list[int]]:
        return prompt_context(self.tokenizer, prompt, self.mask_id, self.span_start_id)

    def example(self, prompt: list[Segment], answer: list[Segment]) -> InfillingExample:
        markers = (self.mask_id, self.span_start_id, self.span_end_id)
        return task_example(self.tokenizer, prompt, answer, *markers)

    def training_examples(
        self,
        user: UserHistory,
        rng: random.Random,
        candidates: int,
        catalog: list[int],
        masked_text: bool = True,
    ) -> list[InfillingExample]:
        """One example per task and one entity-aware masked behaviour text."""
        *earlier, target = user.items
        context = self.context(user.profile, earlier, rng)
        seen = set(user.items)
        negatives = [
            i for i in rng.sample(catalog, min(len(catalog), 4 * candidates)) if i not in seen
        ]
        examples = [
            self.example(
                self.prompt(rng.choice(templates("next_item", True)), context),
                [entity(self.titles[target])],
            )
        ]
        pool = negatives[: candidates - 1] + [target]
        rng.shuffle(pool)
        examples.append(
            self.example(
                self.prompt(
                    rng.choice(templates("candidates", True)),
                    context,
                    candidates=candidate_segments([self.titles[i] for i in pool]),
                ),
                [entity(self.titles[target])],
            )
        )
        if user.ratings[-1] is not None:
            rating = str(int(round(user.ratings[-1])))
            examples.append(
                self.example(
                    self.prompt(
                        rng.choice(templates("rating", True)), context, item=self.titles[target]
                    ),
                    [entity(rating)],
                )
            )
        liked = user.ratings[-1] is None or user.ratings[-1] >= 4
        other = negatives[-1] if negatives else target
        item, answer = (target, "yes") if liked and rng.random() < 0.5 else (other, "no")
        examples.append(
            self.example(
                self.prompt(rng.choice(templates("direct", True)), context, item=self.titles[item]),
                [entity(answer)],
            )
        )
        review = user.reviews[-1] if len(user.reviews) == len(user.items) else None
        if review:
            examples.append(
                self.example(
                    self.prompt(
                        rng.choice(templates("explanation", True)),
                        context,
                        item=self.titles[target],
                    ),
                    [Segment(" " + self.shortened(review))],
                )
            )
        if not masked_text:
            return examples
        text = tokenise(self.tokenizer, context["profile"] + context["history"])
        level = rng.choice(list(MaskLevel))
        spans = choose_spans(text, level, rng)
        if spans:
            examples.append(
                infilling_example(text, spans, self.mask_id, self.span_start_id, self.span_end_id)
            )
        return examples
