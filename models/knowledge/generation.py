"""Batched knowledge generation with any Hugging Face causal LM, over a shared prompt prefix.

Every item's prompt is the same template text up to the item's own fields (the
system message and the instruction), about 100 of its 120 tokens. That prefix
is prefilled once per generator (one LLM, adapter and template) and its
key/value cache reused for every batch: only each item's own tokens are
prefilled, right-aligned after the prefix (padding sits between the two, masked,
with position ids that continue the prefix). Decoding is greedy with the
repetition penalty, one token per step for the whole batch; a row leaves the
batch as soon as its JSON holds both fields (or at EOS or the token budget), so
a long answer does not keep short ones computing. Greedy, so the same LLM and
prompt give the same knowledge (what makes the cache key sound); the texts equal
those of plain uncached greedy decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import torch
from transformers import DynamicCache

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


@dataclass
class GenerationStats:
    """What generation cost, summed over a generator's calls (the knowledge job's summary)."""

    items: int = 0
    prompt_tokens: int = 0  # every prompt's tokens, the shared prefix included
    prefilled_tokens: int = 0  # what was actually run through the LLM before decoding
    generated_tokens: int = 0
    prefix_hits: int = 0  # items whose whole shared prefix came from the cache
    prefill_s: float = 0.0
    decode_s: float = 0.0

    def since(self, earlier: GenerationStats) -> GenerationStats:
        return GenerationStats(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )

    def summary(self) -> dict:
        seconds = self.prefill_s + self.decode_s
        return {
            **asdict(self),
            "prefill_s": round(self.prefill_s, 2),
            "decode_s": round(self.decode_s, 2),
            "prefix_hit_rate": round(self.prefix_hits / self.items, 4) if self.items else 0.0,
            "items_per_s": round(self.items / seconds, 3) if seconds else 0.0,
        }


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


class KnowledgeGenerator:
    """`generate(items)` -> one `KnowledgeText` per item, in the items' order.

    The prefix cache belongs to the model as it is when first used: a model whose weights
    change afterwards needs a new generator. `prefix_cache=False` prefills whole prompts
    (the bench's baseline)."""

    def __init__(
        self,
        model,
        tokenizer,
        template: PromptTemplate,
        batch_size: int = 16,
        max_new_tokens: int = 128,
        repetition_penalty: float = 1.0,
        prefix_cache: bool = True,
    ):
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty
        self.prefix_cache = prefix_cache
        self.stats = GenerationStats()
        self._prefix: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._closing: list[bool] | None = None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    def _render(self, messages: list[dict[str, str]]) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text + self.template.response_prefix

    def prompt(self, item: ItemInfo) -> str:
        return self._render(self.template.messages(item))

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False).input_ids

    def shared_prefix_ids(self) -> list[int]:
        """The tokens every item's prompt starts with: the rendering up to the item's JSON,
        less any token that the item's first characters could merge with."""
        marker = "\x00"
        text = self._render(self.template.messages_with(marker)).split(marker)[0]
        empty = self._render(self.template.messages_with('{"title": ""}'))
        ids, sample = self._ids([text, empty])
        return ids[: _common_length(ids, sample)]

    def _cached_prefix(self) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The shared prefix's ids and per-layer keys and values, computed on first use."""
        if self._prefix is None:
            started = time.perf_counter()
            ids = self.shared_prefix_ids()
            with torch.inference_mode():
                out = self.model(
                    input_ids=torch.tensor([ids], device=self.model.device),
                    use_cache=True,
                    logits_to_keep=1,
                )
            layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            self._prefix = ids, layers
            self.stats.prefill_s += time.perf_counter() - started
            self.stats.prefilled_tokens += len(ids)
        return self._prefix

    def _batch_cache(self, rows: list[list[int]]) -> tuple[int, DynamicCache]:
        """(tokens of every row covered by the cache, a fresh cache holding them for each
        row): the stored prefix is only read, expanded to the batch, never written."""
        config = getattr(self.model, "config", None)
        if not self.prefix_cache:
            return 0, DynamicCache(config=config)
        ids, layers = self._cached_prefix()
        # At least one own token per row is left to prefill: the logits come from it.
        shared = min(min(_common_length(row, ids), len(row) - 1) for row in rows)
        if shared == len(ids):
            self.stats.prefix_hits += len(rows)
        if shared == 0:
            return 0, DynamicCache(config=config)
        batch = len(rows)
        data = [
            (
                k[..., :shared, :].expand(batch, -1, -1, -1),
                v[..., :shared, :].expand(batch, -1, -1, -1),
            )
            for k, v in layers
        ]
        return shared, DynamicCache(ddp_cache_data=data, config=config)

    def _closing_tokens(self) -> list[bool]:
        """Whether each token's text holds a "}": an answer can only become complete on one."""
        if self._closing is None:
            pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            self._closing = ["}" in piece for piece in pieces]
        return self._closing

    def raw_answers(self, prompts: Sequence[str]) -> list[str]:
        """The LLM's continuation of each prompt (one batch), prefix included."""
        rows = self._ids(prompts)
        device = self.model.device
        started = time.perf_counter()
        shared, cache = self._batch_cache(rows)
        width = max(len(row) for row in rows) - shared
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        own = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            suffix = row[shared:]
            input_ids[index, width - len(suffix) :] = torch.tensor(suffix)
            own[index, width - len(suffix) :] = 1
        mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), own], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        mask, input_ids, positions = mask.to(device), input_ids.to(device), positions.to(device)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            prefilled = time.perf_counter()
            self.stats.prefill_s += prefilled - started
            self.stats.prefilled_tokens += int(own.sum())
            self.stats.prompt_tokens += sum(len(row) for row in rows)
            tokens = self._decode(rows, out.logits[:, -1, :], mask, positions[:, -1], cache)
            self.stats.decode_s += time.perf_counter() - prefilled
        self.stats.items += len(rows)
        prefix = self.template.response_prefix
        return [prefix + self.tokenizer.decode(row, skip_special_tokens=True) for row in tokens]

    def _decode(self, rows, logits, mask, positions, cache) -> list[list[int]]:
        """Greedy decoding; a finished row is dropped from the batch and its cache."""
        seen = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        for index, row in enumerate(rows):
            seen[index, row] = True  # the repetition penalty covers the prompt too
        closing, eos = self._closing_tokens(), self.tokenizer.eos_token_id
        prefix = self.template.response_prefix
        tokens: list[list[int]] = [[] for _ in rows]
        alive = list(range(len(rows)))
        for _ in range(self.max_new_tokens):
            scores = logits.float()
            if self.repetition_penalty != 1.0:
                penalised = torch.where(
                    scores < 0, scores * self.repetition_penalty, scores / self.repetition_penalty
                )
                scores = torch.where(seen, penalised, scores)
            chosen = scores.argmax(-1)
            seen[torch.arange(len(alive)), chosen] = True
            keep = []
            for slot, (row, token) in enumerate(zip(alive, chosen.tolist(), strict=True)):
                tokens[row].append(token)
                done = (
                    token == eos
                    or len(tokens[row]) >= self.max_new_tokens
                    or (
                        token < len(closing)
                        and closing[token]
                        and answer_complete(
                            prefix + self.tokenizer.decode(tokens[row], skip_special_tokens=True)
                        )
                    )
                )
                if not done:
                    keep.append(slot)
            self.stats.generated_tokens += len(alive)
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=logits.device)
                cache.batch_select_indices(index)
                mask, positions, seen, chosen = (
                    mask[index],
                    positions[index],
                    seen[index],
                    chosen[index],
                )
                alive = [alive[slot] for slot in keep]
            mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
            positions = positions + 1
            logits = self.model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :]
        return tokens

    def generate(
        self,
        items: Sequence[ItemInfo],
        on_batch: Callable[[list[KnowledgeText]], None] | None = None,
    ) -> list[KnowledgeText]:
        """Knowledge for every item; `on_batch` sees each finished batch (progress, writes)."""
        if not items:
            return []
        prompts = [self.prompt(item) for item in items]
        lengths = [len(ids) for ids in self._ids(prompts)]
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
