"""SeRALM alignment: the LLM as a LoRA policy rewarded by the recommender (pure torch/peft)."""
