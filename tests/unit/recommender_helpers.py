"""Shared checks of the sequential recommender tests: a tiny synthetic catalog whose
next item is fixed by the previous one (a random permutation), trained with the
causal all-positions objective, and the contract's edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import ArtifactError
from models.metrics import ranks_from_scores
from models.sequential import SequentialRecommender, build_recommender
from tests.threads import one_torch_thread

N_ITEMS = 31  # padding + 30 real items
LENGTH = 8
KNOWLEDGE_DIM = 12
FACTS_DIM = 10
# What every model's tiny config starts from (the contract tests' window is LENGTH).
TINY_BASE = {"hidden_size": 16, "max_seq_length": LENGTH, "dropout_prob": 0.0}
# ... and the self-attention models' (SASRec, LightSANs): one layer of two heads.
TINY_ATTENTION = {
    **TINY_BASE,
    "n_layers": 1,
    "n_heads": 2,
    "inner_size": 32,
    "attn_dropout_prob": 0.0,
}
# A one-layer, one-head SASRec on windows of six, for the tests of what is built around a model.
TINY_SASREC = {
    "hidden_size": 16,
    "n_layers": 1,
    "n_heads": 1,
    "inner_size": 32,
    "max_seq_length": 6,
    "dropout_prob": 0.0,
    "attn_dropout_prob": 0.0,
}


def successor_table(seed: int = 0) -> torch.Tensor:
    """next_item[i] for real items 1..N_ITEMS-1 (index 0 unused): one cycle through all."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(N_ITEMS - 1, generator=generator) + 1
    successor = torch.zeros(N_ITEMS, dtype=torch.long)
    successor[order] = order.roll(-1)
    return successor


def walks(successor: torch.Tensor, count: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    current = torch.randint(1, N_ITEMS, (count,), generator=generator)
    steps = [current]
    for _ in range(length - 1):
        current = successor[current]
        steps.append(current)
    return torch.stack(steps, dim=1)


def train_on_walks(model, steps: int = 60, lr: float = 0.01) -> None:
    successor = successor_table()
    sequences = walks(successor, 64, LENGTH + 1, seed=1)
    inputs, targets = sequences[:, :-1], sequences[:, 1:]
    lengths = torch.full((len(sequences),), LENGTH)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    with one_torch_thread():
        for _ in range(steps):
            optimizer.zero_grad()
            model.loss(inputs, lengths, targets).backward()
            optimizer.step()
    model.eval()


def hit_rate_at_1(model) -> float:
    """HR@1 on fresh walks of every length 1..LENGTH (shorter ones right-padded)."""
    successor = successor_table()
    sequences = walks(successor, 200, LENGTH, seed=2)
    lengths = torch.randint(1, LENGTH + 1, (200,), generator=torch.Generator().manual_seed(3))
    padded = sequences * (torch.arange(LENGTH) < lengths.unsqueeze(1))
    last = sequences[torch.arange(200), lengths - 1]
    with torch.no_grad():
        scores = model.full_scores(padded, lengths)
    return float((ranks_from_scores(scores, successor[last]) == 1).float().mean())


def knowledge(count: int = N_ITEMS, seed: int = 4, dim: int = KNOWLEDGE_DIM) -> torch.Tensor:
    """Unit vectors per item (row 0, padding, zero): an LLM channel, or `facts(...)`."""
    vectors = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))
    vectors = torch.nn.functional.normalize(vectors, dim=-1)
    vectors[0] = 0.0
    return vectors


def facts(count: int = N_ITEMS, seed: int = 7) -> torch.Tensor:
    """A facts channel of another width than the LLM's."""
    return knowledge(count, seed, FACTS_DIM)


def check_learns_successor(name: str, config: dict, with_knowledge: bool = False, **train):
    """With knowledge: both channels."""
    torch.manual_seed(0)
    table, facts_table = (knowledge(), facts()) if with_knowledge else (None, None)
    model = build_recommender(name, N_ITEMS, config, knowledge=table, facts=facts_table)
    train_on_walks(model, **train)
    hr = hit_rate_at_1(model)
    assert hr >= 0.9, f"{name} HR@1 {hr:.3f} on the successor walks"


def check_padded_history_scores_finite(name: str, config: dict):
    torch.manual_seed(0)
    model = build_recommender(name, N_ITEMS, config, knowledge=knowledge(), facts=facts()).eval()
    item_seq = torch.zeros(3, LENGTH, dtype=torch.long)
    item_seq[0, :1] = torch.tensor([5])
    item_seq[1, :3] = torch.tensor([7, 8, 9])
    lengths = torch.tensor([1, 3, 0])  # the last: nothing at all, every position masked
    with torch.no_grad():
        scores = model.full_scores(item_seq, lengths)
        users = model.user_representation(item_seq, lengths)
        items = model.item_representations()
    assert scores.shape == (3, N_ITEMS)
    assert torch.isfinite(scores[:, 1:]).all()
    assert scores[:, 0].eq(float("-inf")).all()  # padding is never recommended
    # Scores are dot products of the two representations (what serving indexes).
    torch.testing.assert_close(scores[:, 1:], (users @ items.T)[:, 1:])
    # Padding after the history changes nothing: a wider window scores the same.
    wide = torch.cat([item_seq, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    if wide.shape[1] <= model.config.max_seq_length:
        with torch.no_grad():
            torch.testing.assert_close(model.full_scores(wide, lengths)[:2], scores[:2])


def check_knowledge_only_item(name: str, config: dict):
    torch.manual_seed(0)
    model = build_recommender(name, N_ITEMS, config, knowledge=knowledge(), facts=facts())
    train_on_walks(model, steps=20)
    model.extend_items(2, knowledge(2, seed=9), facts(2, seed=10))
    assert model.n_items == N_ITEMS + 2
    history = torch.tensor([[3, 4, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        scores = model.full_scores(history, torch.tensor([2]))
        items = model.item_representations()
    assert scores.shape == (1, N_ITEMS + 2)
    assert torch.isfinite(scores[0, 1:]).all()
    # The new items' vectors come from their knowledge: distinct and non-zero.
    assert items[N_ITEMS:].norm(dim=1).gt(0).all()
    assert not torch.allclose(items[N_ITEMS], items[N_ITEMS + 1])
    # The grown model still trains (new rows are parameters, not frozen copies).
    model.train()
    loss = model.loss(
        torch.tensor([[N_ITEMS, 0, 0, 0, 0, 0, 0, 0]]),
        torch.tensor([1]),
        torch.tensor([N_ITEMS + 1]),
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert model.fusion.item_embedding.weight.grad[N_ITEMS].abs().sum() > 0


def check_round_trip(name: str, config: dict, folder: Path):
    """save_pretrained / from_pretrained keep the scores, the knowledge table (with the items
    added after training) and the ids, in safetensors and JSON only; a damaged file is refused."""
    torch.manual_seed(0)
    model = build_recommender(name, N_ITEMS, config, knowledge=knowledge(), facts=facts())
    train_on_walks(model, steps=5)
    model.extend_items(2, knowledge(2, seed=9), facts(2, seed=10))
    item_ids = np.arange(N_ITEMS + 2, dtype=np.int64) * 10
    model.save_pretrained(folder, item_ids, extra={"dataset": "toy"})
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "ids.safetensors",
        "model.safetensors",
    ]
    loaded = SequentialRecommender.from_pretrained(folder)
    history, lengths = torch.tensor([[1, 2, N_ITEMS + 1, 0, 0, 0, 0, 0]]), torch.tensor([3])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model.full_scores(history, lengths), model.full_scores(history, lengths)
        )
    torch.testing.assert_close(loaded.model.fusion.knowledge, model.fusion.knowledge)
    torch.testing.assert_close(loaded.model.fusion.facts, model.fusion.facts)
    assert type(loaded.model) is type(model) and not loaded.model.training
    assert loaded.extra == {"dataset": "toy"}
    np.testing.assert_array_equal(loaded.item_ids, item_ids)
    other = "gru4rec" if name != "gru4rec" else "sasrec"
    with pytest.raises(ArtifactError, match=f"holds a {name} model"):
        type(build_recommender(other, N_ITEMS)).from_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a truncated copy
    with pytest.raises(ArtifactError, match="model.safetensors"):
        SequentialRecommender.from_pretrained(folder)


class RecommenderContract:
    """The contract's checks as tests: a model's test file subclasses this as `Test<Model>`
    with the model's registered `name` and its tiny `config`."""

    name: str
    config: dict

    def test_learns_the_successor_of_each_item(self):
        check_learns_successor(self.name, self.config)

    def test_learns_the_successor_with_knowledge(self):
        check_learns_successor(self.name, self.config, with_knowledge=True)

    def test_padded_and_empty_histories_get_finite_scores(self):
        check_padded_history_scores_finite(self.name, self.config)

    def test_knowledge_only_item_gets_a_finite_score(self):
        check_knowledge_only_item(self.name, self.config)

    def test_save_pretrained_round_trip_keeps_scores_and_knowledge(self, tmp_path):
        check_round_trip(self.name, self.config, tmp_path)
