"""Attention for decoding on a CPU without copying the keys and values per query head.

The knowledge LLM (SmolLM2) has three query heads per key/value head. transformers'
eager attention repeats each key/value head for its query heads before the matmuls:
every decoding step copies the whole cache, three times over, in every layer, and
at batch 64 that copy was a third of the decoding time (bench/results/knowledge-profile.md).
Here the query heads that share a key/value head are stacked along the query axis
instead, so one matmul per key/value head reads the cache as it is. The arithmetic is
the same as eager attention's; only the layout differs.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

NAME = "grouped_eager"


def grouped_eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """query (batch, heads, q, d), key and value (batch, kv_heads, length, d) -> the
    output (batch, q, heads, d) and the weights (batch, heads, q, length), as eager."""
    batch, heads, q_len, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    # Heads g*kv .. g*kv+g-1 share key/value head kv (transformers' repeat_kv order).
    stacked = query.reshape(batch, kv_heads, groups * q_len, dim)
    weights = torch.matmul(stacked, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        mask = attention_mask[..., :length]
        if mask.shape[1] == 1:
            mask = mask.unsqueeze(2).expand(-1, -1, groups, -1, -1)
            mask = mask.reshape(mask.shape[0], 1, groups * q_len, length)
        else:
            mask = mask.reshape(mask.shape[0], kv_heads, groups * q_len, length)
        weights = weights + mask
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).reshape(batch, heads, q_len, dim)
    return output.transpose(1, 2).contiguous(), weights.reshape(batch, heads, q_len, length)


AttentionInterface.register(NAME, grouped_eager_attention)
# The additive float mask eager attention takes (an unknown name would get a boolean one).
AttentionMaskInterface.register(NAME, eager_mask)
