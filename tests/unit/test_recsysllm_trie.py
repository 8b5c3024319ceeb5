"""The entity trie: only catalog entities, and figure 2's intra-entity positions."""

from __future__ import annotations

import torch

from models.recsysllm.configuration_recsysllm import RecSysLLMConfig
from models.recsysllm.masking import prompt_context
from models.recsysllm.modeling_recsysllm import RecSysLLM
from models.recsysllm.textualise import entity
from models.recsysllm.training import generate_text
from models.recsysllm.trie import EntityTrie
from tests.unit.recsysllm_helpers import tiny_llm, tokenizer

TITLES = ["Toy Story (1995)", "Toy Soldiers (1991)", "Heat (1995)", "Fargo (1996)", "Babe (1995)"]


def catalog(tok):
    return [tok.encode(entity(t).text, add_special_tokens=False) for t in TITLES]


def test_the_trie_admits_exactly_the_catalog_entities():
    tok = tokenizer()
    sequences = catalog(tok)
    trie = EntityTrie(sequences)
    assert len(trie) == len(TITLES)
    assert all(sequence in trie for sequence in sequences)
    assert all(sequence[:-1] not in trie for sequence in sequences)  # a prefix is not one
    assert tok.encode(" Toy Story 2 (1999)", add_special_tokens=False) not in trie  # not listed
    assert set(trie.next_tokens([])) == {sequence[0] for sequence in sequences}
    assert trie.next_tokens([123456]) == []


def test_positions_grow_within_an_entity_and_restart_otherwise():
    trie = EntityTrie([[5, 6, 7], [5, 8], [9]])
    assert trie.positions([1, 5, 6, 7, 2, 5, 8]) == [1, 1, 2, 3, 1, 1, 2]
    assert trie.positions([5, 6, 7, 5, 8, 9, 9]) == [1, 2, 3, 1, 2, 1, 1]
    assert trie.positions([5, 1, 6]) == [1, 1, 1]


def test_constrained_beam_search_returns_only_catalog_entities():
    tok, llm, markers = tiny_llm()
    model = RecSysLLM(llm, RecSysLLMConfig(lora_rank=0), markers).eval()
    sequences = catalog(tok)
    trie = EntityTrie(sequences)
    context, positions = prompt_context(tok, [entity("Heat (1995)")], markers[0], markers[1])
    excluded = {tuple(sequences[2])}
    results = model.beam_search_entities(context, positions, trie, beams=4, exclude=excluded)
    assert len(results) == 4
    assert all(tokens in trie for tokens, _ in results)
    assert tuple(results[0][0]) not in excluded and all(
        tuple(t) not in excluded for t, _ in results
    )
    assert len({tuple(tokens) for tokens, _ in results}) == 4
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True) and all(torch.isfinite(torch.tensor(scores)))


def _full_pass_score(model, context, positions, answer) -> float:
    """log p(answer, span end | context) from one uncached forward pass over everything."""
    ids = context + answer + [model.span_end_id]
    intra = positions + list(range(1, len(answer) + 1)) + [0]
    logits = model(torch.tensor([ids]), torch.tensor([intra])).logits[0].float()
    log_probs = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
    targets = torch.tensor(answer + [model.span_end_id])
    return float(log_probs.gather(-1, targets.unsqueeze(-1)).sum())


def test_cached_scoring_and_exhaustive_beam_search_match_full_forward_passes():
    tok, llm, markers = tiny_llm(seed=3)
    model = RecSysLLM(llm, RecSysLLMConfig(lora_rank=0), markers).eval()
    torch.nn.init.normal_(model.intra_position.weight)  # the positions must line up too
    sequences = catalog(tok)
    context, positions = prompt_context(tok, [entity("Heat (1995)")], markers[0], markers[1])
    with torch.no_grad():
        expected = [_full_pass_score(model, context, positions, s) for s in sequences]
        # Answers of different lengths in one padded batch.
        scores = model.sequence_scores(context, positions, sequences)
        assert torch.allclose(scores, torch.tensor(expected), atol=1e-4)
        # As many beams as entities: the search is exhaustive, so it must return every
        # entity with its full-pass score, best first.
        found = model.beam_search_entities(
            context, positions, EntityTrie(sequences), beams=len(sequences)
        )
    best_first = torch.tensor(sorted(expected, reverse=True))
    assert torch.allclose(torch.tensor([score for _, score in found]), best_first, atol=1e-4)
    by_entity = {tuple(tokens): score for tokens, score in found}
    assert set(by_entity) == {tuple(s) for s in sequences}
    for sequence, score in zip(sequences, expected, strict=True):
        assert abs(by_entity[tuple(sequence)] - score) < 1e-4


def test_cached_free_text_generation_equals_greedy_full_forward_passes():
    tok, llm, markers = tiny_llm(seed=5)
    model = RecSysLLM(llm, RecSysLLMConfig(lora_rank=0), markers).eval()
    torch.nn.init.normal_(model.intra_position.weight)
    trie = EntityTrie(catalog(tok))
    context, positions = prompt_context(tok, [entity("Heat (1995)")], markers[0], markers[1])
    expected: list[int] = []  # the definition: one uncached pass over everything per token
    with torch.no_grad():
        for _ in range(12):
            ids = torch.tensor([context + expected])
            intra = torch.tensor([positions + trie.positions(expected)])
            token = int(model(ids, intra).logits[0, -1].argmax())
            if token == model.span_end_id:
                break
            expected.append(token)
    generated = generate_text(model, context, positions, trie.positions, 12)
    assert generated == expected and len(generated) > 1
