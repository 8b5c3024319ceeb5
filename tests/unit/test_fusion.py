"""Knowledge fusion: concat(ID embedding, projected knowledge), both knowledge modes, and the
table replaced for good or lent for a block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from models.knowledge.fusion import KnowledgeFusion, TextKnowledge
from models.sequential import SequentialRecommender, build_recommender
from tests.unit.recommender_helpers import TINY_SASREC

TINY = {**TINY_SASREC, "knowledge_size": 8, "knowledge_dropout": 0.0}


def tiny_encoder() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return BertModel(config)


def item_texts(n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of a short fake text per item (row 0, padding, has none)."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 50, (n_items, 6), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[0], attention_mask[0] = 0, 0
    return input_ids, attention_mask


def test_item_vector_is_merged_id_and_projected_knowledge():
    torch.manual_seed(0)
    knowledge = torch.randn(5, 4)
    fusion = KnowledgeFusion(5, 6, knowledge=knowledge, knowledge_size=3)
    expected = fusion.merge(
        torch.cat([fusion.item_embedding.weight, fusion.projection(knowledge)], dim=-1)
    )
    torch.testing.assert_close(fusion(), expected)
    # Without knowledge an item is its ID embedding alone.
    plain = KnowledgeFusion(5, 6)
    torch.testing.assert_close(plain(), plain.item_embedding.weight)
    assert plain.knowledge_dim is None and fusion.knowledge_dim == 4


def test_knowledge_changes_the_ranking_and_is_not_trained():
    torch.manual_seed(0)
    knowledge = torch.nn.functional.normalize(torch.randn(11, 4), dim=-1)
    model = build_recommender("sasrec", 11, TINY, knowledge=knowledge).eval()
    history, lengths = torch.tensor([[1, 2, 3, 0, 0, 0]]), torch.tensor([3])
    before = model.full_scores(history, lengths)
    model.fusion.set_knowledge(knowledge.flip(0))
    assert not torch.allclose(before[:, 1:], model.full_scores(history, lengths)[:, 1:])
    assert all("knowledge" != name.split(".")[-1] for name, _ in model.named_parameters())


def test_set_knowledge_keeps_its_own_copy_and_stays_out_of_the_state_dict():
    torch.manual_seed(0)
    cached = torch.randn(11, 4)
    model = build_recommender("sasrec", 11, TINY, knowledge=cached).eval()
    history, lengths = torch.tensor([[1, 2, 3, 0, 0, 0]]), torch.tensor([3])
    replacement = torch.randn(11, 4, dtype=torch.float64)
    model.fusion.set_knowledge(replacement)
    scores = model.full_scores(history, lengths)
    torch.testing.assert_close(model.fusion.knowledge, replacement.float())
    assert model.fusion.knowledge.dtype == torch.float32
    replacement.zero_()  # the caller's tensor changing later changes nothing
    torch.testing.assert_close(model.full_scores(history, lengths), scores)
    assert "fusion.knowledge" in dict(model.named_buffers())
    assert "fusion.knowledge" not in model.state_dict()


def test_swapped_knowledge_lends_a_table_and_restores_the_previous_one():
    torch.manual_seed(0)
    cached = torch.randn(11, 4)
    model = build_recommender("sasrec", 11, TINY, knowledge=cached).eval()
    history, lengths = torch.tensor([[1, 2, 3, 0, 0, 0]]), torch.tensor([3])
    with torch.no_grad():
        before = model.full_scores(history, lengths)
    original = model.fusion.knowledge
    # A table with rows to differentiate: the layer takes it as given, so autograd
    # reaches both the recommender's parameters and the rows themselves.
    rows = torch.randn(11, 4, requires_grad=True)
    with model.fusion.swapped_knowledge(rows):
        assert model.fusion.knowledge is rows
        model.full_scores(history, lengths)[0, 5].backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0
    assert model.fusion.projection.weight.grad.abs().sum() > 0
    assert model.fusion.knowledge is original and not original.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(model.full_scores(history, lengths), before)
    # Restored after an error in the block too.
    with pytest.raises(RuntimeError, match="inside"):
        with model.fusion.swapped_knowledge(torch.zeros(11, 4)):
            raise RuntimeError("inside")
    assert model.fusion.knowledge is original


def test_a_table_of_the_wrong_shape_or_no_table_to_replace_is_an_error():
    model = build_recommender("sasrec", 11, TINY, knowledge=torch.zeros(11, 4))
    for wrong in (torch.zeros(10, 4), torch.zeros(11, 5)):
        with pytest.raises(ValueError, match="must be \\[11, 4\\]"):
            model.fusion.set_knowledge(wrong)
        with pytest.raises(ValueError, match="must be \\[11, 4\\]"):
            with model.fusion.swapped_knowledge(wrong):
                pass
    plain = build_recommender("sasrec", 11, TINY)
    with pytest.raises(ValueError, match="no pre-encoded knowledge"):
        plain.fusion.set_knowledge(torch.zeros(11, 4))
    text = build_recommender(
        "sasrec", 11, TINY, text=TextKnowledge(tiny_encoder(), *item_texts(11))
    )
    with pytest.raises(ValueError, match="text encoder"):
        with text.fusion.swapped_knowledge(torch.zeros(11, 16)):
            pass


def test_wrong_knowledge_shapes_are_errors():
    try:
        build_recommender("sasrec", 11, TINY, knowledge=torch.zeros(10, 4))
    except ValueError as error:
        assert "10 rows for 11 items" in str(error)
    else:
        raise AssertionError("a knowledge table of the wrong height was accepted")
    model = build_recommender("sasrec", 11, TINY, knowledge=torch.zeros(11, 4))
    try:
        model.extend_items(2, torch.zeros(2, 5))
    except ValueError as error:
        assert "[2, 4]" in str(error)
    else:
        raise AssertionError("new items' knowledge of the wrong width was accepted")


def test_text_encoder_is_fine_tuned_jointly_and_saved_as_vectors(tmp_path):
    n_items = 11
    encoder = tiny_encoder()
    text = TextKnowledge(encoder, *item_texts(n_items))
    model = build_recommender("sasrec", n_items, TINY, text=text)
    assert model.knowledge_dim == 16
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    sequences = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8, 9]])
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(sequences[:, :-1], torch.tensor([6, 6]), sequences[:, 1:]).backward()
        optimizer.step()
    changed = [name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])]
    assert "embeddings.word_embeddings.weight" in changed
    assert any(name.startswith("encoder.layer.0") for name in changed)

    model.eval()
    model.save_pretrained(tmp_path, np.arange(n_items))
    loaded = SequentialRecommender.from_pretrained(tmp_path).model  # the pre-encoded form
    vectors = loaded.fusion.knowledge.numpy()
    assert vectors.shape == (n_items, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors[1:], axis=1), 1.0, rtol=1e-5)
    assert loaded.fusion.text is None
    history, lengths = torch.tensor([[2, 3, 0, 0, 0, 0]]), torch.tensor([2])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.full_scores(history, lengths), model.full_scores(history, lengths)
        )
