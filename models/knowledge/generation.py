"""Batched knowledge generation with any Hugging Face causal LM.

Prompts go through the tokenizer's chat template, are sorted by length so a
batch pads little, and are padded on the left: a decoder-only model continues
from the last position, which must be a real token of every row. Decoding is
greedy, so the same LLM and prompt give the same knowledge (what makes the
cache key sound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria

from models.knowledge.parsing import answer_complete, parse_knowledge
from models.knowledge.prompts import ItemInfo, PromptTemplate


@dataclass(frozen=True)
class KnowledgeText:
    item_id: int
    description: str
    summarization: str
    raw: str  # the response prefix plus what the LLM wrote
    parse: str  # "json", "repaired" or "raw"

    @property
    def text(self) -> str:
        """The knowledge: description + " " + summarization (the template's `document`
        puts the item's facts before it for the encoder)."""
        return " ".join(part for part in (self.description, self.summarization) if part)

    def as_record(self) -> dict:
        return {
            "item_id": self.item_id,
            "description": self.description,
            "summarization": self.summarization,
            "text": self.text,
            "parse": self.parse,
        }


def knowledge_from_raw(item_id: int, raw: str) -> KnowledgeText:
    parsed = parse_knowledge(raw)
    return KnowledgeText(item_id, parsed.description, parsed.summarization, raw, parsed.how)


class _AnswersComplete(StoppingCriteria):
    """Stops each row once its answer is complete, instead of at the token budget: a small
    LLM rarely ends its turn after the JSON and would chat on."""

    def __init__(self, tokenizer, prompt_length: int, prefix: str):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.prefix = prefix

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        answers = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_length :], skip_special_tokens=True
        )
        done = [answer_complete(self.prefix + answer) for answer in answers]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class KnowledgeGenerator:
    """`generate(items)` -> one `KnowledgeText` per item, in the items' order."""

    def __init__(
        self,
        model,
        tokenizer,
        template: PromptTemplate,
        batch_size: int = 16,
        max_new_tokens: int = 128,
        repetition_penalty: float = 1.0,
    ):
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    def prompt(self, item: ItemInfo) -> str:
        text = self.tokenizer.apply_chat_template(
            self.template.messages(item), tokenize=False, add_generation_prompt=True
        )
        return text + self.template.response_prefix

    def raw_answers(self, prompts: Sequence[str]) -> list[str]:
        """The LLM's continuation of each prompt (one batch), prefix included."""
        previous_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            batch = self.tokenizer(
                list(prompts), return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.model.device)
        finally:
            self.tokenizer.padding_side = previous_side
        prompt_length = batch["input_ids"].shape[1]
        stop = _AnswersComplete(self.tokenizer, prompt_length, self.template.response_prefix)
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                repetition_penalty=self.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                stopping_criteria=[stop],
            )
        new_tokens = output[:, prompt_length:]
        answers = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [self.template.response_prefix + answer for answer in answers]

    def generate(
        self,
        items: Sequence[ItemInfo],
        on_batch: Callable[[list[KnowledgeText]], None] | None = None,
    ) -> list[KnowledgeText]:
        """Knowledge for every item; `on_batch` sees each finished batch (progress, writes)."""
        if not items:
            return []
        prompts = [self.prompt(item) for item in items]
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False).input_ids]
        order = sorted(range(len(items)), key=lambda index: lengths[index])
        results: list[KnowledgeText | None] = [None] * len(items)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            answers = self.raw_answers([prompts[index] for index in chunk])
            done = [
                knowledge_from_raw(items[index].item_id, answer)
                for index, answer in zip(chunk, answers, strict=True)
            ]
            for index, knowledge in zip(chunk, done, strict=True):
                results[index] = knowledge
            if on_batch is not None:
                on_batch(done)
        return [result for result in results if result is not None]
