"""The aligned LLM as a policy: LoRA adapters, sampled knowledge, log p(s|x) and the KL term.

The original LLM of the KL penalty is the same network with its adapters
switched off (peft's `disable_adapter()`), never a second copy: on a 7B model a
copy would double the memory, and with LoRA the two differ only by the adapter
deltas anyway. peft initialises every LoRA `B` matrix to zero, so a fresh
policy *is* the original LLM: the KL term and its gradient start at zero.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def attach_lora(
    model,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: list[str],
    gradient_checkpointing: bool = False,
):
    """Wrap a causal LM in trainable LoRA adapters (the base weights stay frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        task_type="CAUSAL_LM",
    )
    if gradient_checkpointing:
        # Recomputes activations in the backward pass: what lets a 7B policy fit a GPU.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The frozen embeddings give no grad-requiring input to checkpointed blocks otherwise.
        model.enable_input_require_grads()
    return get_peft_model(model, config)


def adapter_state(policy) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) tensors only: the snapshot a generator needs, a few MB at most."""
    return {
        name: param.detach().to("cpu", copy=True)
        for name, param in policy.named_parameters()
        if param.requires_grad
    }


def load_adapter_state(policy, state: dict[str, torch.Tensor]) -> None:
    """Copy a snapshot from `adapter_state` into a policy of the same shape."""
    params = dict(policy.named_parameters())
    missing = set(state) - set(params)
    if missing:
        raise KeyError(f"the policy has no parameters {sorted(missing)[:3]}...")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def autocast(device: torch.device | str, dtype: torch.dtype):
    """bf16/fp16 autocast on an accelerator; a no-op when computing in float32 (the CPU path)."""
    device = torch.device(device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class KnowledgeSamples:
    """Sampled knowledge texts with the token layout the policy terms need.

    Rows are `[left-padded prompt | completion, padded after its end]`, so every
    completion starts at the same column `prompt_length`.
    """

    input_ids: torch.Tensor  # (B, P + T)
    attention_mask: torch.Tensor  # (B, P + T), 0 on padding
    completion_mask: torch.Tensor  # (B, P + T) bool: the sampled tokens, the end token included
    prompt_length: int
    texts: list[str]

    def to(self, device) -> KnowledgeSamples:
        return KnowledgeSamples(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.completion_mask.to(device),
            self.prompt_length,
            self.texts,
        )

    @property
    def completion_length(self) -> int:
        return self.input_ids.shape[1] - self.prompt_length


def completion_mask(completions: torch.Tensor, end_token_ids: list[int]) -> torch.Tensor:
    """True up to and including each row's first end token (what generate pads after it)."""
    is_end = torch.isin(completions, torch.tensor(end_token_ids, device=completions.device))
    ended_before = (is_end.cumsum(dim=1) - is_end.long()) > 0
    return ~ended_before


@torch.no_grad()
def sample_knowledge(
    policy,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> KnowledgeSamples:
    """One sampled knowledge text per prompt (already chat-formatted), batched."""
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = batch.to(device)
    was_training = policy.training
    policy.eval()
    with autocast(device, dtype):
        output = policy.generate(
            **batch,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    policy.train(was_training)
    prompt_length = batch["input_ids"].shape[1]
    completions = output[:, prompt_length:]
    end_ids = _end_token_ids(policy, tokenizer)
    sampled = completion_mask(completions, end_ids)
    mask = torch.cat([torch.zeros_like(batch["attention_mask"], dtype=torch.bool), sampled], 1)
    attention = torch.cat([batch["attention_mask"], sampled.long()], dim=1)
    texts = tokenizer.batch_decode(
        completions.masked_fill(~sampled, tokenizer.pad_token_id), skip_special_tokens=True
    )
    return KnowledgeSamples(output, attention, mask, prompt_length, texts)


def _end_token_ids(policy, tokenizer) -> list[int]:
    eos = policy.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


@dataclass
class PolicyTerms:
    log_prob: torch.Tensor  # (B,) log p(s|x) under the policy, differentiable
    kl: torch.Tensor  # (B,) sum over s's tokens of KL(policy || original) at each position
    tokens: torch.Tensor  # (B,) tokens in each s


def _completion_logits(model, samples: KnowledgeSamples) -> torch.Tensor:
    """Logits at the positions that predict the completion tokens: (B, T, V).

    Only the last T + 1 positions go through the LM head: with a 49k vocabulary
    the prompt's logits would be most of the memory and are never used.
    """
    length = samples.completion_length
    logits = model(
        input_ids=samples.input_ids,
        attention_mask=samples.attention_mask,
        logits_to_keep=length + 1,
    ).logits
    return logits[:, :-1].float()


def policy_terms(
    policy, samples: KnowledgeSamples, with_kl: bool = True, dtype: torch.dtype = torch.float32
) -> PolicyTerms:
    """log p(s|x) and the per-token KL to the original LLM (equations 6-8 of SeRALM).

    The KL is the exact one over the vocabulary at each sampled position,
    KL(pi(.|x, s<t) || pi_0(.|x, s<t)), not the single-sample estimate
    log pi(s_t) - log pi_0(s_t): the exact form is zero with a zero gradient
    when the adapters are zero, where the estimate's gradient is not.
    """
    device = samples.input_ids.device
    targets = samples.input_ids[:, samples.prompt_length :]
    mask = samples.completion_mask[:, samples.prompt_length :].to(torch.float32)
    with autocast(device, dtype):
        logits = _completion_logits(policy, samples)
    log_probs = F.log_softmax(logits, dim=-1)
    token_log_prob = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    log_prob = (token_log_prob * mask).sum(dim=1)
    kl = torch.zeros_like(log_prob)
    if with_kl:
        with torch.no_grad(), policy.disable_adapter(), autocast(device, dtype):
            reference = F.log_softmax(_completion_logits(policy, samples), dim=-1)
        token_kl = (log_probs.exp() * (log_probs - reference)).sum(dim=-1)
        kl = (token_kl * mask).sum(dim=1)
    return PolicyTerms(log_prob=log_prob, kl=kl, tokens=mask.sum(dim=1))
