"""RecSysLLM (Chu et al.): a causal LM with LoRA, entity-aware masking,
intra-entity positions and trie-constrained decoding of entities."""
