"""Tiny real models for the alignment tests: a word-level tokenizer and a random Llama.

A 20-word vocabulary makes a random policy sample every word often, so a few
dozen CPU iterations are enough to see the alignment move the distribution.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from workers.alignment.generator import AlignmentTask, KnowledgeSampler, SamplingConfig

WORDS = [
    "<unk>", "<pad>", "<eos>", "item", "knowledge", "about", "users", "enjoy",
    "movie", "film", "story", "drama", "comedy", "fun", "dark", "long", "short",
    "classic", "new", "great",
]  # fmt: skip
KEYWORD = "great"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )


def tiny_llm(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        # Far from uniform, so that adapters and updates move the distribution visibly.
        initializer_range=0.3,
        pad_token_id=WORDS.index("<pad>"),
        eos_token_id=WORDS.index("<eos>"),
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model


class BagOfWords:
    """A text encoder for the toy task: L2-normalised word counts over the tiny vocabulary."""

    def __call__(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), len(WORDS)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                if word in WORDS:
                    vectors[row, WORDS.index(word)] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-6)


class ToyKnowledgeTable(torch.nn.Module):
    """The toy's knowledge table, lent for a block as `KnowledgeFusion.swapped_knowledge`
    lends a real recommender's (what alignment calls)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("knowledge", table.clone(), persistent=False)

    @contextlib.contextmanager
    def swapped_knowledge(self, table: torch.Tensor) -> Iterator[None]:
        previous, self.knowledge = self.knowledge, table
        try:
            yield
        finally:
            self.knowledge = previous


class TinyKnowledgeRecommender(torch.nn.Module):
    """A small model of the recommender contract: an item's representation is its ID embedding
    plus its projected knowledge vector; a user is the mean of their history's items."""

    def __init__(self, n_items: int, dim: int, knowledge: torch.Tensor | None = None):
        super().__init__()
        self.item_embedding = torch.nn.Embedding(n_items, dim, padding_idx=0)
        if knowledge is not None:
            self.fusion = ToyKnowledgeTable(knowledge)
            self.projection = torch.nn.Linear(knowledge.shape[1], dim)

    def item_representations(self) -> torch.Tensor:
        items = self.item_embedding.weight
        if hasattr(self, "fusion"):
            items = items + self.projection(self.fusion.knowledge)
        return items

    def user_representation(self, item_seq, item_seq_len) -> torch.Tensor:
        mask = (item_seq > 0).unsqueeze(-1).float()
        items = self.item_representations()[item_seq] * mask
        return items.sum(1) / item_seq_len.clamp(min=1).unsqueeze(-1).float()

    def full_scores(self, item_seq, item_seq_len) -> torch.Tensor:
        return self.user_representation(item_seq, item_seq_len) @ self.item_representations().T


def knowledge_only(item: int, text: str) -> str:
    """The sampled text as its own document (these toy items have no facts)."""
    return text


def random_instances(count: int, n_items: int, width: int, generator: torch.Generator):
    """`count` histories of 1..`width` random items (right-padded to `width`), their lengths
    and a random target each."""
    lengths = torch.randint(1, width + 1, (count,), generator=generator)
    histories = torch.randint(1, n_items, (count, width), generator=generator)
    histories[torch.arange(width).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    targets = torch.randint(1, n_items, (count,), generator=generator)
    return histories, lengths, targets


def toy_sampler(
    policy, recommender, frozen, encode, task: AlignmentTask, config: SamplingConfig
) -> KnowledgeSampler:
    """A sampler over the tiny tokenizer whose sampled texts are the items' whole documents."""
    return KnowledgeSampler(
        policy, tiny_tokenizer(), recommender, frozen, encode, knowledge_only, task, config
    )
