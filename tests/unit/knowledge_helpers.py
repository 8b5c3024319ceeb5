"""Shared pieces of the knowledge tests: the real SmolLM2 tokenizer (its chat template and
BPE, fetched once into the cache) and a tiny random Llama over its vocabulary."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from models.knowledge.prompts import ItemInfo
from streamrec.assets import fetch_assets

MOVIES = [
    ItemInfo(1, "Toy Story", 1995, ("Animation", "Children's", "Comedy")),
    ItemInfo(2, "GoldenEye", 1995, ("Action", "Adventure", "Thriller")),
    ItemInfo(3, "Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995, ("Drama",)),
    ItemInfo(4, "Twelve Monkeys", 1995, ("Drama", "Sci-Fi")),
    ItemInfo(5, "Heat", 1995, ("Action", "Crime", "Thriller")),
]


def real_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(fetch_assets().llm, local_files_only=True)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


def tiny_llm(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval()
