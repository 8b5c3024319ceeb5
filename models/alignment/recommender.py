"""p(y|x) and p(y|x,s) from sequential recommenders (contract 1), with per-instance knowledge.

A knowledge-enhanced recommender keeps one knowledge vector per item in a table
(the `knowledge` it was built with). In alignment each training instance
re-samples the knowledge of a few items, so each instance needs its own table:
the cached one with those rows replaced. The unchanged model runs with that
table swapped in for one forward, so any recommender of the contract works
without knowing how its fusion layer is written; the table is found by the
values it was built with.
"""

from __future__ import annotations

import contextlib

import torch

from models.alignment.objective import target_log_prob


def knowledge_table_name(recommender: torch.nn.Module, knowledge: torch.Tensor) -> str:
    """The name of the buffer or frozen parameter holding `knowledge` ([n_items, K])."""
    tensors = list(recommender.named_buffers()) + list(recommender.named_parameters())
    for name, tensor in tensors:
        if tensor.shape == knowledge.shape and torch.equal(
            tensor.detach().cpu().float(), knowledge.detach().cpu().float()
        ):
            return name
    raise ValueError(
        f"{type(recommender).__name__} holds no tensor equal to the knowledge table "
        f"{tuple(knowledge.shape)}: was it built with that knowledge?"
    )


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


@contextlib.contextmanager
def swapped_tensor(module: torch.nn.Module, name: str, tensor: torch.Tensor):
    """`module`'s buffer or parameter `name` replaced by `tensor` (not copied into it, so
    autograd sees a fresh tensor and the original is untouched), restored on exit."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    slots = owner._buffers if leaf in owner._buffers else owner._parameters
    original = slots[leaf]
    slots[leaf] = tensor
    try:
        yield
    finally:
        slots[leaf] = original


def target_log_probs_with_knowledge(
    recommender: torch.nn.Module,
    table_name: str,
    tables: torch.Tensor,
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """log p(y|x,s) with instance b's knowledge table `tables[b]`: (B,), differentiable in the
    recommender's parameters (one forward per instance, since the item tables differ)."""
    log_probs = []
    for b in range(item_seq.shape[0]):
        with swapped_tensor(recommender, table_name, tables[b]):
            scores = recommender.full_scores(item_seq[b : b + 1], item_seq_len[b : b + 1])
        log_probs.append(target_log_prob(scores, targets[b : b + 1]))
    return torch.cat(log_probs)
