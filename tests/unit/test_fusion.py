"""Knowledge fusion: the ID embedding merged with two gated channels (the facts, the LLM's
knowledge), both LLM-channel modes, and the LLM table replaced for good or lent for a block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from models.knowledge.fusion import KnowledgeFusion, TextKnowledge
from models.sequential import SequentialRecommender, build_recommender
from tests.threads import one_torch_thread
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


def test_item_vector_is_merged_id_and_each_gated_channel():
    torch.manual_seed(0)
    knowledge, facts = torch.randn(5, 4), torch.randn(5, 7)
    fusion = KnowledgeFusion(5, 6, knowledge=knowledge, facts=facts, knowledge_size=3)
    assert fusion.channels == ("facts", "llm")
    gate = {name: torch.sigmoid(logit) for name, logit in fusion.gate_logits.items()}
    parts = [
        fusion.item_embedding.weight,
        gate["facts"] * fusion.projections["facts"](facts),
        gate["llm"] * fusion.projections["llm"](knowledge),
    ]
    torch.testing.assert_close(fusion(), fusion.merge(torch.cat(parts, dim=-1)))
    # Untrained, the ID embedding dominates: the merge is the identity on it, each gate small.
    ids = fusion.item_embedding.weight
    torch.testing.assert_close(fusion.merge.weight[:, :6], torch.eye(6))
    assert all(value < 0.5 for value in fusion.gates().values())
    # Each channel alone, and none: an item is its ID embedding alone.
    facts_only = KnowledgeFusion(5, 6, facts=facts, knowledge_size=3)
    assert facts_only.channels == ("facts",) and facts_only.knowledge_dim is None
    assert facts_only.facts_dim == 7 and fusion.knowledge_dim == 4
    plain = KnowledgeFusion(5, 6)
    torch.testing.assert_close(plain(), plain.item_embedding.weight)
    assert plain.channels == () and ids.shape == (5, 6)


CLUSTERS, WARM, COLD = 4, 6, 2  # clusters; trained and new items per cluster


def cluster_task():
    """Items in clusters; a user's next item is another item of the same cluster. The
    training catalog holds WARM items per cluster; COLD more per cluster come afterwards
    (`extend_items`, as the knowledge job adds them) with nothing but their knowledge:
    only what their facts say (the cluster) can rank them."""
    n_warm = CLUSTERS * WARM
    cluster = torch.cat([torch.arange(n_warm) // WARM, torch.arange(CLUSTERS * COLD) // COLD])
    cluster = torch.cat([torch.tensor([-1]), cluster])  # by item id; 0 is padding
    generator = torch.Generator().manual_seed(5)
    members = torch.arange(1, n_warm + 1).view(CLUSTERS, WARM)
    picks = torch.randint(WARM, (256, 7), generator=generator)
    sequences = members[torch.randint(CLUSTERS, (256,), generator=generator)].gather(1, picks)
    facts = torch.zeros(len(cluster), CLUSTERS)
    facts[torch.arange(1, len(cluster)), cluster[1:]] = 1.0
    facts[1:] += 0.05 * torch.randn(len(cluster) - 1, CLUSTERS, generator=generator)
    return sequences, facts, cluster


def cold_hit_rate(model, cluster) -> float:
    """For a history of one cluster's trained items: the share of the top COLD new items
    that belong to that cluster (chance: 1 / CLUSTERS)."""
    cold = torch.arange(CLUSTERS * WARM + 1, len(cluster))
    hits = []
    with torch.no_grad():
        for c in range(CLUSTERS):
            history = (torch.arange(WARM) + 1 + c * WARM)[:5].unsqueeze(0)
            scores = model.full_scores(history, torch.tensor([5]))[0, cold]
            top = cold[scores.topk(COLD).indices]
            hits.append(float((cluster[top] == c).float().mean()))
    return sum(hits) / len(hits)


def cluster_model(facts=None, knowledge=None, steps: int = 150) -> torch.nn.Module:
    """SASRec trained on the clusters' trained items, then grown by the new items with
    their rows of `facts` and `knowledge` (the LLM channel)."""
    sequences, *_ = cluster_task()
    n_warm = CLUSTERS * WARM + 1
    torch.manual_seed(0)
    model = build_recommender(
        "sasrec",
        n_warm,
        TINY,
        knowledge=None if knowledge is None else knowledge[:n_warm],
        facts=None if facts is None else facts[:n_warm],
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    lengths = torch.full((len(sequences),), 6)
    model.train()
    with one_torch_thread():
        for _ in range(steps):
            optimizer.zero_grad()
            model.loss(sequences[:, :-1], lengths, sequences[:, 1:]).backward()
            optimizer.step()
    model.extend_items(
        CLUSTERS * COLD,
        None if knowledge is None else knowledge[n_warm:],
        None if facts is None else facts[n_warm:],
    )
    return model.eval()


def test_the_facts_channel_survives_an_llm_channel_of_noise():
    """New items are ranked by their facts; an LLM channel of pure noise beside the facts
    does not take that away."""
    _, facts, cluster = cluster_task()
    noise = torch.randn(len(facts), 16, generator=torch.Generator().manual_seed(6))
    noise = torch.nn.functional.normalize(noise, dim=-1)
    base = cold_hit_rate(cluster_model(), cluster)
    facts_only = cold_hit_rate(cluster_model(facts=facts), cluster)
    both = cluster_model(facts=facts, knowledge=noise)
    with_noise = cold_hit_rate(both, cluster)
    assert facts_only >= 0.9 and base <= 0.6, (base, facts_only)
    assert with_noise >= facts_only - 0.1, (with_noise, facts_only, both.fusion.gates())


def test_alignment_rewrites_only_the_llm_channel():
    """set_knowledge and swapped_knowledge (what alignment uses) change the LLM channel;
    the facts table stays the very tensor it was, and no gradient reaches it."""
    torch.manual_seed(0)
    facts, knowledge = torch.randn(11, 5), torch.randn(11, 4)
    model = build_recommender("sasrec", 11, TINY, knowledge=knowledge, facts=facts).eval()
    history, lengths = torch.tensor([[1, 2, 3, 0, 0, 0]]), torch.tensor([3])
    facts_before = model.fusion.facts
    with torch.no_grad():
        before = model.full_scores(history, lengths)
    rows = torch.randn(11, 4, requires_grad=True)
    with model.fusion.swapped_knowledge(rows):
        model.full_scores(history, lengths)[0, 5].backward()
    assert rows.grad.abs().sum() > 0 and model.fusion.facts.grad is None
    model.fusion.set_knowledge(torch.randn(11, 4))
    assert model.fusion.facts is facts_before
    torch.testing.assert_close(model.fusion.facts, facts)
    with torch.no_grad():
        assert not torch.allclose(model.full_scores(history, lengths)[:, 1:], before[:, 1:])
    # A layer with the facts channel alone has no LLM channel to rewrite.
    facts_only = build_recommender("sasrec", 11, TINY, facts=facts)
    with pytest.raises(ValueError, match="no pre-encoded LLM knowledge"):
        facts_only.fusion.set_knowledge(torch.zeros(11, 4))


def test_the_aligned_version_records_a_new_llm_channel_and_the_same_facts():
    from types import SimpleNamespace

    from workers.alignment.publish import aligned_provenance

    facts = {"source": "ml-100k item facts (movies)", "encoder": "all-minilm-l6-v2"}
    llm = {"llm_version": "smollm2@1d8", "prompt_version": "movies-v2-14a6", "encoder": "m"}
    prepared = SimpleNamespace(knowledge_summary={"provenance": {"facts": facts, "llm": llm}})
    provenance = aligned_provenance(prepared, SimpleNamespace(version="v000002"))
    assert provenance["facts"] == facts
    assert provenance["llm"] == {
        **llm,
        "llm_version": "smollm2@1d8+lora:v000002",
        "adapter_version": "v000002",
    }
    assert llm["llm_version"] == "smollm2@1d8"  # the prepared summary is left as it was


def test_both_channels_round_trip_and_single_vector_artifacts_are_refused(tmp_path):
    torch.manual_seed(0)
    facts, knowledge = torch.randn(11, 5), torch.randn(11, 4)
    model = build_recommender("sasrec", 11, TINY, knowledge=knowledge, facts=facts).eval()
    model.extend_items(2, torch.randn(2, 4), torch.randn(2, 5))
    model.save_pretrained(tmp_path / "two", np.arange(13))
    loaded = SequentialRecommender.from_pretrained(tmp_path / "two").model
    torch.testing.assert_close(loaded.fusion.facts, model.fusion.facts)
    torch.testing.assert_close(loaded.fusion.knowledge, model.fusion.knowledge)
    history, lengths = torch.tensor([[1, 12, 0, 0, 0, 0]]), torch.tensor([2])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.full_scores(history, lengths), model.full_scores(history, lengths)
        )
    # An artifact of the single-vector layout (one `fusion.projection`) is refused by name.
    from models import artifacts

    folder = tmp_path / "two"
    document = artifacts.load_config(folder, "sequential")
    state = artifacts.load_tensors(folder)
    state["fusion.projection.weight"] = state.pop("fusion.projections.llm.weight")
    artifacts.save_tensors(folder, state)
    artifacts.save_config(
        folder, "sequential", "sasrec", document["config"], extra=document["extra"]
    )
    with pytest.raises(artifacts.ArtifactError, match="single-vector knowledge model"):
        SequentialRecommender.from_pretrained(tmp_path / "two")


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
    assert model.fusion.projections["llm"].weight.grad.abs().sum() > 0
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
    with pytest.raises(ValueError, match="no pre-encoded LLM knowledge"):
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
