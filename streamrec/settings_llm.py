"""The LLM families' settings: item knowledge, SeRALM alignment, GenRec and RecSysLLM.

Part of the one settings tree (``streamrec.settings.Settings``), kept apart so that each
module stays readable; they are set from the environment the same way, e.g.
``STREAMREC_KNOWLEDGE__BATCH_SIZE=32``.
"""

from __future__ import annotations

from pydantic import BaseModel


class KnowledgeSettings(BaseModel):
    """LLM item knowledge: prompt templates, batched generation, text encoding, cache."""

    # Empty: assets.llm_path, else the default SmolLM2-135M-Instruct. The text encoder is
    # assets.text_encoder_path (else all-MiniLM-L6-v2).
    llm_path: str = ""
    # A LoRA adapter applied to the LLM: a PEFT folder, "latest" (the newest `llm-adapter`
    # registry version), or empty for none. It is part of the LLM version string.
    adapter: str = ""
    device: str = "auto"  # "auto": cuda when there is one
    dtype: str = "auto"  # the LLM's weights; "auto": bfloat16 on cuda, float32 on a CPU
    # Prompt template per dataset (movies, books, generic); datasets not listed get
    # `default_domain`, and so do catalog items in the knowledge job unless `job_domain` is set.
    dataset_domains: dict[str, str] = {
        "ml-100k": "movies",
        "ml-1m": "movies",
        "ml-20m": "movies",
        "amazon-books": "books",
    }
    default_domain: str = "generic"
    job_domain: str = "movies"
    # Items per LLM batch: a finished answer leaves its batch, so a large batch costs no padding.
    batch_size: int = 64
    # Prefill the prompt's shared prefix (system text and instruction, up to the item's
    # JSON) once and reuse its key/value cache for every item; the texts do not change.
    prefix_cache: bool = True
    # Torch's dynamic int8 quantisation of the LLM's Linear layers, on a CPU only. Its texts
    # differ from float32's, so the LLM version gets "+int8" (cached and stored apart).
    int8: bool = False
    # Modest: an answer stops as soon as its JSON holds both fields; this caps a rambling one.
    max_new_tokens: int = 96
    repetition_penalty: float = 1.1
    encode_batch_size: int = 64
    # Torch threads of a knowledge process on a CPU; 0: the cores the load average leaves
    # free (at least one). Threads beyond the free cores wait at barriers for one another.
    threads: int = 0
    # The cache of generated texts; empty: <data_dir>/knowledge/cache.sqlite.
    cache_path: str = ""
    # Knowledge job: its Kafka consumer group on `knowledge-requests`, the items written to
    # ClickHouse per batch (what a killed run can lose); it extends `recommender.family`.
    job_group: str = "streamrec-knowledge"
    job_write_batch: int = 64
    job_poll_timeout_ms: int = 2000
    # The most time between two polls before the broker drops the job from its group: a
    # run drains the requests, generates, then commits them, so this bounds a whole run.
    job_max_poll_interval_s: float = 4 * 3600.0
    # Longest wait for the consumer group to get its partitions before a run goes on.
    job_join_timeout_s: float = 30.0
    # `streamrec worker knowledge` without --once: seconds between runs.
    job_interval_s: float = 60.0


class AlignmentSettings(BaseModel):
    """SeRALM alignment of the LLM to the recommender (LoRA policy gradient + KL)."""

    # "auto": cuda when there is one. dtype "auto": bfloat16 autocast on cuda, float32 on cpu.
    device: str = "auto"
    dtype: str = "auto"
    # None: on where the device is cuda (it trades compute for the memory a 7B policy needs).
    gradient_checkpointing: bool | None = None
    # Empty: assets.llm_path, else the default SmolLM2-135M-Instruct.
    llm_path: str = ""
    # The recommender aligned to (a name of models.sequential) and its knowledge folder
    # (contract 2; empty: <data_dir>/knowledge/<dataset>, from the not-aligned LLM).
    recommender: str = "sasrec"
    knowledge_dir: str = ""
    domain: str = "movies"
    # Whose knowledge is re-sampled per instance: "last_item" (default), "target_item", or
    # "k_items" (the last `k_items` items of the history); all other items keep the cached one.
    resample: str = "last_item"
    k_items: int = 3
    mode: str = "async"  # "async": a generator process; "sync": sample, then train, in turn
    iterations: int = 1000
    batch_size: int = 8
    # The generator's parameter snapshot (LoRA adapters and Rec) is refreshed every N iterations.
    refresh_interval: int = 50
    # Batches the generator may run ahead, and fresh batches the trainer keeps to reuse
    # instead of waiting when the generator is behind.
    queue_batches: int = 4
    replay_batches: int = 8
    alpha: float = 0.1  # the KL coefficient (equation 8)
    baseline: str = "none"  # "none" (the paper's estimator), "unit" (w - 1) or "mean" (EMA)
    baseline_decay: float = 0.9
    max_ratio: float | None = None  # cap on p(y|x,s)/p(y|x); None keeps the paper's weight
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = ["q_proj", "v_proj"]
    llm_learning_rate: float = 1e-4
    rec_learning_rate: float = 1e-3
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    # Torch threads per process (trainer and generator each); 0 leaves torch's default.
    threads_per_process: int = 0
    # Training examples drawn per run (0: all of the training split); evaluation users (0: all).
    max_examples: int = 0
    eval_users: int = 0
    seed: int = 0
    # Rec_f (no knowledge) and Rec (with knowledge): checkpoint folders (contract 1); empty:
    # each is trained here as `streamrec train` trains (recommender.* settings, early
    # stopping on validation) for at most `pretrain_epochs`, with this batch size and rate.
    base_checkpoint: str = ""
    knowledge_checkpoint: str = ""
    pretrain_epochs: int = 200
    pretrain_batch_size: int = 64
    pretrain_learning_rate: float = 1e-3
    # Greedy regeneration with the aligned LLM, for evaluation, of the evaluated users'
    # targets and re-sampled history items plus this many most popular items (the rest
    # keep their cached knowledge; the knowledge job rewrites every item after a run).
    regenerate_popular_items: int = 100
    regenerate_batch_size: int = 16
    regenerate_max_new_tokens: int = 96
    publish: bool = True


class GenRecSettings(BaseModel):
    """GenRec: BART encoder-decoder over ID-augmented token sequences."""

    # A BART checkpoint folder (model + tokenizer) to start from; empty: the small
    # configuration below, trained from scratch (no pretrained BART is available offline).
    bart_path: str = ""
    d_model: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int = 256
    dropout: float = 0.1
    # Dropout on attention weights; any makes PyTorch's attention leave its fused kernel.
    attention_dropout: float = 0.0
    # Initial weight spread of the from-scratch BART (BART's own 0.02 is for 1024-wide
    # layers: with narrow ones attention stays uniform for long and learning stalls).
    init_std: float = 0.1
    # Most recent items of a history put in the encoder text (each item is a few sub-tokens).
    max_history: int = 20
    # Digits per sub-token when the built-in vocabulary writes an ID (2: `item_01 68`).
    piece_digits: int = 2
    beam_size: int = 20
    default_k: int = 20
    # Masked-item pretraining: masked copies of each user's training sequence per epoch.
    pretrain_epochs: int = 5
    pretrain_masks_per_user: int = 20
    # Fine-tuning runs at most this many epochs (the learning rate decays to 0 over them),
    # and stops once validation NDCG@10 has not improved for `patience` epochs in a row
    # (0: no validation, all epochs run). On MovieLens-100K the best epoch was the 6th.
    finetune_epochs: int = 10
    patience: int = 2
    batch_size: int = 128
    eval_batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    # Share of each phase's optimizer steps spent warming the learning rate up from zero.
    warmup_ratio: float = 0.05
    # Caps for short runs (0: no cap): optimizer steps per phase, and examples evaluated.
    max_steps: int = 0
    max_eval_examples: int = 0
    seed: int = 2020
    device: str = "auto"
    family: str = "genrec"


class RecSysLLMSettings(BaseModel):
    """RecSysLLM: LoRA-tuned causal LM with entity-aware masking and trie decoding."""

    family: str = "recsysllm"
    # Base LLM for training (empty: the default asset); LoRA on its projections.
    llm_path: str = ""
    lora_rank: int = 8
    # Items of a user's history written into a prompt (long/medium/short windows).
    prompt_items: int = 20
    windows: list[float] = [0.1, 0.3, 0.6]
    candidates: int = 20
    # Training: users, steps and batch size (CPU runs use a subset).
    train_users: int = 200
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 5e-4
    seed: int = 0
    # Serving: beam width of NextItems (k is at most this) and explanation length.
    beams: int = 10
    explanation_tokens: int = 48
    max_candidates: int = 100
