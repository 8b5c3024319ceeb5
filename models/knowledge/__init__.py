"""LLM item knowledge (SeRALM): prompts, batched generation, parsing, encoding, cache."""
