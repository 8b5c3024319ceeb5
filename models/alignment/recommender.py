"""p(y|x) and p(y|x,s) from sequential recommenders (contract 1), with per-instance knowledge.

A knowledge-enhanced recommender keeps one knowledge vector per item in a table
(its fusion layer's `knowledge`). In alignment each training instance
re-samples the knowledge of a few items, so each instance needs its own table:
the cached one with those rows replaced, lent to the fusion layer for one
forward (`KnowledgeFusion.swapped_knowledge`).
"""

from __future__ import annotations

import torch

from models.alignment.objective import target_log_prob


def replace_rows(table: torch.Tensor, items: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Per instance b, the table with rows `items[b]` set to `vectors[b]`: (B, n_items, K).

    Item 0 (padding) in `items` marks an unused slot and changes nothing.
    """
    batch = items.shape[0]
    tables = table.unsqueeze(0).repeat(batch, 1, 1)
    rows = torch.arange(batch, device=items.device).unsqueeze(1).expand_as(items)
    used = items > 0
    tables[rows[used], items[used]] = vectors[used].to(tables.dtype)
    return tables


def target_log_probs(
    recommender: torch.nn.Module,
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """log p(y|x) for each instance, the softmax over all items: (B,)."""
    return target_log_prob(recommender.full_scores(item_seq, item_seq_len), targets)


def target_log_probs_with_knowledge(
    recommender: torch.nn.Module,
    tables: torch.Tensor,
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """log p(y|x,s) with instance b's knowledge table `tables[b]`: (B,), differentiable in the
    recommender's parameters (one forward per instance, since the item tables differ)."""
    log_probs = []
    for b in range(item_seq.shape[0]):
        with recommender.fusion.swapped_knowledge(tables[b]):
            scores = recommender.full_scores(item_seq[b : b + 1], item_seq_len[b : b + 1])
        log_probs.append(target_log_prob(scores, targets[b : b + 1]))
    return torch.cat(log_probs)
