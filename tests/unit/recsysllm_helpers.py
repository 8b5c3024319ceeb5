"""A small word-level tokenizer and a tiny random causal LM for the RecSysLLM tests.

The word-level vocabulary (every word the tests write) keeps the output layer
small, so the models train in seconds on a busy CPU; the code under test takes
any Hugging Face tokenizer.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from models.recsysllm.modeling_recsysllm import add_marker_tokens
from models.recsysllm.prompts import TEMPLATES
from models.recsysllm.textualise import WINDOW_LEADS

TITLES = [
    "Toy Story (1995)",
    "Toy Soldiers (1991)",
    "Toy Story 2 (1999)",
    "Heat (1995)",
    "Fargo (1996)",
    "Babe (1995)",
    "Casino (1995)",
]
WORDS = "The user is a 24-year-old male female technician person watched and Seen What next ?"


def tokenizer(extra_texts: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    pre = pre_tokenizers.Whitespace()
    texts = [*TITLES, WORDS, *WINDOW_LEADS, *(t.text for t in TEMPLATES), "1 2 3 4 5 yes no"]
    texts += extra_texts
    words = sorted({word for text in texts for word, _ in pre.pre_tokenize_str(text)})
    vocab = {word: index for index, word in enumerate(["[UNK]", "[PAD]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def tiny_llm(seed: int = 0):
    """A random two-layer Llama over that vocabulary, with the marker tokens added."""
    tok = tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    markers = add_marker_tokens(tok, model)
    return tok, model, markers
