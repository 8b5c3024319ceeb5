"""The alignment losses on a tiny random Llama with LoRA: the update's direction, the KL term."""

from __future__ import annotations

import math

import pytest
import torch

from models.alignment.objective import (
    PolicyWeights,
    alignment_loss,
    recommendation_ratio,
    target_log_prob,
)
from models.alignment.policy import (
    adapter_state,
    attach_lora,
    load_adapter_state,
    policy_terms,
    sample_knowledge,
)
from tests.unit.alignment_helpers import tiny_llm, tiny_tokenizer

PROMPTS = ["item movie about", "item film story"]


def _policy(seed: int = 0):
    return attach_lora(tiny_llm(seed), rank=4, alpha=8, dropout=0.0, target_modules=["q_proj"])


def _perturb_adapters(policy, scale: float = 0.5) -> None:
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)


def _step(policy, samples, ratios: torch.Tensor, baseline: str) -> torch.Tensor:
    """One SGD step of the policy gradient (no KL); the log p(s|x) before and after."""
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.01)
    optimizer.zero_grad()
    before = policy_terms(policy, samples, with_kl=False).log_prob.detach()
    terms = policy_terms(policy, samples, with_kl=False)
    alignment_loss(terms, PolicyWeights(baseline)(ratios), alpha=0.0).total.backward()
    optimizer.step()
    after = policy_terms(policy, samples, with_kl=False).log_prob.detach()
    return after - before


def test_ratio_is_p_with_over_p_without_knowledge():
    scores_with = torch.tensor([[0.0, 2.0, 0.0]])
    scores_without = torch.tensor([[0.0, 0.0, 0.0]])
    target = torch.tensor([1])
    ratio = recommendation_ratio(
        target_log_prob(scores_with, target), target_log_prob(scores_without, target)
    )
    p_with = math.exp(2) / (math.exp(2) + 2)
    assert ratio.item() == pytest.approx(p_with / (1 / 3), rel=1e-5)
    assert recommendation_ratio(torch.tensor([0.0]), torch.tensor([-5.0]), max_ratio=10.0) == 10.0


def test_helpful_knowledge_gains_probability_and_harmful_loses_it():
    torch.manual_seed(0)
    policy = _policy()
    _perturb_adapters(policy, 0.05)  # a zero B would leave A without gradient for one step
    tokenizer = tiny_tokenizer()
    samples = sample_knowledge(policy, tokenizer, PROMPTS, 5, temperature=1.0, top_p=1.0)
    helps, hurts = 3.0, 0.2  # p(y|x,s) / p(y|x) of the first and of the second text

    state = adapter_state(policy)
    # The paper's estimator: each sample is pushed up in proportion to its ratio.
    change = _step(policy, samples, torch.tensor([helps, helps]), "none")
    assert (change > 0).all()
    load_adapter_state(policy, state)
    weak = _step(policy, samples, torch.tensor([hurts, hurts]), "none")
    assert (change > weak).all()

    # With the unit baseline (w - 1), a text that hurts the recommender loses probability.
    load_adapter_state(policy, state)
    change = _step(policy, samples, torch.tensor([helps, hurts]), "unit")
    assert change[0] > 0
    assert change[1] < 0


def test_mean_baseline_centres_the_weights():
    weights = PolicyWeights("mean", decay=0.5)
    first = weights(torch.tensor([1.0, 3.0]))
    assert first.tolist() == [-1.0, 1.0]
    second = weights(torch.tensor([4.0]))  # past average 2.0 is the baseline
    assert second.tolist() == [2.0]
    assert weights.average == pytest.approx(3.0)
    with pytest.raises(ValueError, match="baseline must be one of"):
        PolicyWeights("median")


def test_kl_and_its_gradient_are_zero_while_adapters_are_zero():
    torch.manual_seed(1)
    policy = _policy()
    tokenizer = tiny_tokenizer()
    samples = sample_knowledge(policy, tokenizer, PROMPTS, 6, temperature=1.0, top_p=1.0)
    terms = policy_terms(policy, samples)
    assert terms.kl.abs().max().item() < 1e-6
    terms.kl.sum().backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert grads and all(g is None or g.abs().max().item() < 1e-6 for g in grads)

    # Once the adapters move away from zero, the same term is positive and has a gradient.
    policy.zero_grad()
    _perturb_adapters(policy)
    terms = policy_terms(policy, samples)
    assert (terms.kl > 1e-4).all()
    terms.kl.sum().backward()
    assert max(p.grad.abs().max().item() for p in policy.parameters() if p.requires_grad) > 1e-4


def test_reference_is_the_same_model_with_adapters_disabled():
    base = tiny_llm(2)
    ids = torch.tensor([[3, 8, 5, 11, 12]])
    with torch.no_grad():
        original = base(input_ids=ids).logits
    policy = attach_lora(base, rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    _perturb_adapters(policy)
    with torch.no_grad():
        adapted = policy(input_ids=ids).logits
        with policy.disable_adapter():
            disabled = policy(input_ids=ids).logits
    assert not torch.allclose(adapted, original, atol=1e-4)
    assert torch.allclose(disabled, original, atol=1e-6)


def test_completion_mask_stops_after_the_end_token():
    policy = _policy()
    tokenizer = tiny_tokenizer()
    samples = sample_knowledge(policy, tokenizer, PROMPTS, 12, temperature=1.0, top_p=1.0)
    completions = samples.input_ids[:, samples.prompt_length :]
    mask = samples.completion_mask[:, samples.prompt_length :]
    for row, row_mask in zip(completions.tolist(), mask.tolist(), strict=True):
        kept = [token for token, keep in zip(row, row_mask, strict=True) if keep]
        if tokenizer.eos_token_id in row:
            assert kept == row[: row.index(tokenizer.eos_token_id) + 1]
        else:
            assert kept == row
    assert not samples.completion_mask[:, : samples.prompt_length].any()
