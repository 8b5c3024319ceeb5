"""SeRALM's alignment objective (paper section 4.4, equations 6-8).

The LLM is rewarded for knowledge s that makes the recommender more sure of
the true next item y: the policy-gradient weight of a sample is

    w(s) = p(y | x, s) / p(y | x)

with p(y|x,s) from the knowledge-enhanced recommender and p(y|x) from a frozen
recommender trained without knowledge. w > 1 raises log p(s|x), w < 1 raises it
less than a sample with a larger weight. The paper's estimator has no baseline:
every w is positive, so every sampled s is pushed up in proportion to w, and
only in expectation (over many samples of one x) does low-w knowledge lose
probability to high-w knowledge. `PolicyWeights` offers baselines that lower the
variance and push a single low-w sample down directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.alignment.policy import PolicyTerms


def target_log_prob(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(y|x) under a softmax over all items' scores: (B, n_items), (B,) -> (B,)."""
    return F.log_softmax(scores.float(), dim=-1).gather(1, targets.view(-1, 1)).squeeze(1)


def recommendation_ratio(
    log_p_with_knowledge: torch.Tensor,
    log_p_without_knowledge: torch.Tensor,
    max_ratio: float | None = None,
) -> torch.Tensor:
    """p(y|x,s) / p(y|x), computed in log space; `max_ratio` caps it (off by default)."""
    ratio = torch.exp(log_p_with_knowledge.float() - log_p_without_knowledge.float())
    return ratio.clamp(max=max_ratio) if max_ratio is not None else ratio


BASELINES = ("none", "unit", "mean")


class PolicyWeights:
    """Turns ratios into policy-gradient weights, with the chosen baseline subtracted.

    - `none`: w itself, the paper's estimator (the default);
    - `unit`: w - 1, i.e. (p(y|x,s) - p(y|x)) / p(y|x): knowledge that helps the
      recommender is pushed up and knowledge that hurts it is pushed down;
    - `mean`: w minus an exponential moving average of past ratios.
    A constant or past-only baseline leaves the estimate unbiased, since E[grad log p(s|x)] = 0.
    """

    def __init__(self, baseline: str = "none", decay: float = 0.9):
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {baseline!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline decay must be in [0, 1), not {decay}")
        self.baseline = baseline
        self.decay = decay
        self.average: float | None = None

    def __call__(self, ratios: torch.Tensor) -> torch.Tensor:
        if self.baseline == "none":
            return ratios
        if self.baseline == "unit":
            return ratios - 1.0
        batch_mean = float(ratios.mean())
        # The first batch has no past: its own mean, so its weights are centred.
        previous = batch_mean if self.average is None else self.average
        self.average = (
            batch_mean
            if self.average is None
            else self.decay * self.average + (1.0 - self.decay) * batch_mean
        )
        return ratios - previous


@dataclass
class AlignmentLoss:
    total: torch.Tensor
    policy_gradient: torch.Tensor
    kl: torch.Tensor


def alignment_loss(terms: PolicyTerms, weights: torch.Tensor, alpha: float) -> AlignmentLoss:
    """-E[w(s) log p(s|x)] + alpha * E[sum_t KL_t]: its gradient is equation 6's estimate
    (w is a constant, never differentiated) plus the KL penalty of equations 7-8."""
    policy_gradient = -(weights.detach().to(terms.log_prob.dtype) * terms.log_prob).mean()
    kl = terms.kl.mean()
    return AlignmentLoss(total=policy_gradient + alpha * kl, policy_gradient=policy_gradient, kl=kl)
