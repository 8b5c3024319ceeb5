"""Which items' knowledge is re-sampled from the LLM for a training instance (x, y).

Every other item keeps its cached knowledge (the table the recommender was
trained with), so p(y|x,s) differs from the cached p(y|x, s_cached) only
through the re-sampled items, and the reward credits exactly the texts that
were sampled. The choices:

- `last_item` (default): the knowledge of x's most recent item. A sequential
  recommender weighs the latest item most, so its knowledge moves p(y|x,s)
  the most per generated text; it is an *input* the recommender also sees at
  serving time, where every item's knowledge is pre-generated the same way; and
  it costs one generation per instance. The reward then says "this description
  of the item I just watched points to what I watch next", which is the
  signal the paper's "knowledge that helps the recommender" asks for.
- `target_item`: the knowledge of y itself, through the output-side item
  representation. It rewards descriptions that make an item easy to retrieve
  for the users who pick it, but it leaks the label: in training only the
  target carries freshly sampled knowledge while every other candidate keeps
  the cached text, so Rec, trained on (x, s, y), can learn "the item whose
  knowledge is new is the answer" (the toy test shows Rec's loss collapse to
  zero that way), and the LLM is then rewarded for anything that looks new.
  At serving time every item's knowledge comes from the same LLM, so that
  shortcut is worthless there. Compared against `last_item` in
  `bench/alignment.py`.
- `k_items`: the last k items of x (k generations per instance): more signal
  per instance at k times the generation cost; the log-probabilities of the k
  texts add up to log p(s|x).
"""

from __future__ import annotations

import torch

RESAMPLE_CHOICES = ("last_item", "target_item", "k_items")


def resampled_items(
    item_seq: torch.Tensor,
    item_seq_len: torch.Tensor,
    targets: torch.Tensor,
    choice: str,
    k: int = 1,
) -> torch.Tensor:
    """(B, slots) item ids whose knowledge is re-sampled; 0 marks an empty slot.

    Histories are left-aligned (RecBole), so the last item of row b sits at
    `item_seq_len[b] - 1`. `k_items` takes the last k positions, fewer where the
    history is shorter.
    """
    if choice == "target_item":
        return targets.view(-1, 1).clone()
    if choice == "last_item":
        k = 1
    elif choice != "k_items":
        raise ValueError(f"resample must be one of {RESAMPLE_CHOICES}, not {choice!r}")
    if k < 1:
        raise ValueError(f"k_items must be at least 1, not {k}")
    offsets = torch.arange(k, device=item_seq.device)
    positions = item_seq_len.view(-1, 1) - 1 - offsets  # most recent first
    valid = positions >= 0
    items = item_seq.gather(1, positions.clamp(min=0))
    return items.masked_fill(~valid, 0)
