"""Training and task inference shared by the worker, the server and the bench."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from models.recsysllm.masking import InfillingExample
from models.recsysllm.modeling_recsysllm import RecSysLLM, collate


def train(
    model: RecSysLLM,
    examples: list[InfillingExample],
    steps: int,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """AdamW over the trainable parameters (adapters, marker rows, intra positions)."""
    rng = random.Random(seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        batch = collate(rng.sample(examples, min(batch_size, len(examples))), model.span_end_id)
        loss = model.loss(batch)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        losses.append(loss.item())
        if progress:
            progress(step, losses[-1])
    model.eval()
    return losses


def rank_answers(
    model: RecSysLLM,
    context: list[int],
    context_positions: list[int],
    answers: list[list[int]],
) -> list[int]:
    """Indices of `answers` from most to least likely after `context`."""
    scores = model.sequence_scores(context, context_positions, answers)
    return torch.argsort(scores, descending=True).tolist()


@torch.no_grad()
def generate_text(
    model: RecSysLLM,
    context: list[int],
    context_positions: list[int],
    position_of: Callable[[list[int]], list[int]],
    max_tokens: int,
) -> list[int]:
    """Greedy free text (explanations) until the span closes; intra-entity
    positions of the generated tokens come from the entity trie (`position_of`).

    The prompt is read once and each new token is one cached step. That is exact
    because `position_of` is causal: a token's position depends only on the tokens
    before it (figure 2's rule), so positions already fed never change.
    """
    cache, logits = model.prefill(context, context_positions)
    generated: list[int] = []
    for _ in range(max_tokens):
        token = int(logits.argmax())
        if token == model.span_end_id:
            break
        generated.append(token)
        if len(generated) == max_tokens:
            break
        output = model(
            torch.tensor([[token]]),
            torch.tensor([position_of(generated)[-1:]]),
            past_key_values=cache,
            use_cache=True,
        )
        cache, logits = output.past_key_values, output.logits[0, -1].float()
    return generated
