"""The RecSysLLM wrapper: starts as its base model, trains only what it should,
learns a small multi-task set, and round-trips through save_pretrained/from_pretrained."""

from __future__ import annotations

import copy
import random
import shutil
from pathlib import Path

import pytest
import torch

from models.artifacts import ArtifactError
from models.recsysllm.configuration_recsysllm import MARKER_TOKENS, RecSysLLMConfig
from models.recsysllm.masking import Segment, prompt_context, task_example
from models.recsysllm.modeling_recsysllm import RecSysLLM, collate
from models.recsysllm.prompts import render, templates
from models.recsysllm.tasks import TaskWriter, UserHistory
from models.recsysllm.textualise import entity
from models.recsysllm.training import rank_answers, train
from models.recsysllm.trie import EntityTrie
from streamrec.datasets import load_dataset
from streamrec.settings import Settings
from tests.unit.recsysllm_helpers import tiny_llm, tokenizer
from workers.recsysllm_training import dataset_data

TITLES = ["Toy Story (1995)", "Heat (1995)", "Fargo (1996)", "Babe (1995)", "Casino (1995)"]
torch.set_num_threads(1)
# A deterministic world: after title k the user watches title k+1 and rates it k+1.
USERS = [(k, TITLES[k], TITLES[(k + 1) % 5], str(k % 5 + 1)) for k in range(5)]


def test_the_wrapped_model_starts_as_its_base_model():
    tok, llm, markers = tiny_llm()
    base = copy.deepcopy(llm).eval()
    model = RecSysLLM.for_training(llm, RecSysLLMConfig(lora_rank=4), markers).eval()
    ids = torch.tensor([tok.encode("The user watched Heat", add_special_tokens=False)])
    positions = torch.arange(ids.shape[1]).unsqueeze(0) % 3 + 1
    assert torch.allclose(model(ids, positions).logits, base(ids).logits, atol=1e-5)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "intra_position.weight" in trainable
    assert any("lora_" in name for name in trainable)
    assert any("trainable_tokens" in name for name in trainable)
    assert all("lora_" in n or "trainable_tokens" in n or n.startswith("intra") for n in trainable)


def multitask_examples(tok, markers):
    examples = []
    for _, seen, following, rating in USERS:
        history = [Segment(" The user watched"), entity(seen), Segment(".")]
        next_prompt = render(templates("next_item", True)[0], profile=[], history=history)
        rating_prompt = render(
            templates("rating", True)[0], profile=[], history=history, item=following
        )
        examples.append(task_example(tok, next_prompt, [entity(following)], *markers))
        examples.append(task_example(tok, rating_prompt, [entity(rating)], *markers))
    return examples


def test_the_loss_on_labelled_positions_only_equals_the_full_causal_lm_loss():
    tok, llm, markers = tiny_llm()
    model = RecSysLLM.for_training(llm, RecSysLLMConfig(lora_rank=4), markers).eval()
    torch.nn.init.normal_(model.intra_position.weight)  # positions take part in the loss
    batch = collate(multitask_examples(tok, markers), model.span_end_id)
    full = model(**batch).loss  # Hugging Face's loss: logits at every position
    assert torch.allclose(model.loss(batch), full, atol=1e-5)


def test_a_tiny_model_learns_a_small_multitask_set():
    tok, llm, markers = tiny_llm()
    torch.manual_seed(0)
    model = RecSysLLM.for_training(llm, RecSysLLMConfig(lora_rank=0), markers)
    examples = multitask_examples(tok, markers)
    losses = train(model, examples, steps=120, batch_size=10, learning_rate=3e-3)
    assert losses[-1] < 0.1 * losses[0]
    catalog = [tok.encode(entity(t).text, add_special_tokens=False) for t in TITLES]
    trie = EntityTrie(catalog)
    ratings = [tok.encode(entity(str(r)).text, add_special_tokens=False) for r in range(1, 6)]
    for _, seen, following, rating in USERS:
        history = [Segment(" The user watched"), entity(seen), Segment(".")]
        prompt = render(templates("next_item", True)[0], profile=[], history=history)
        context, positions = prompt_context(tok, prompt, markers[0], markers[1])
        best = model.beam_search_entities(context, positions, trie, beams=2)[0][0]
        assert best == tok.encode(entity(following).text, add_special_tokens=False)
        prompt = render(templates("rating", True)[0], profile=[], history=history, item=following)
        context, positions = prompt_context(tok, prompt, markers[0], markers[1])
        assert rank_answers(model, context, positions, ratings)[0] + 1 == int(rating)


def test_save_pretrained_round_trip_gives_the_same_scores(tmp_path):
    tok, llm, markers = tiny_llm(seed=3)
    base_copy = copy.deepcopy(llm)
    model = RecSysLLM.for_training(llm, RecSysLLMConfig(lora_rank=4), markers)
    train(model, multitask_examples(tok, markers), steps=3, batch_size=4, learning_rate=1e-2)
    with torch.no_grad():
        model.intra_position.weight.add_(0.01)  # make the saved embedding non-trivial
    folder = model.save_pretrained(tmp_path / "recsysllm", base_llm="tiny")
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    # The adapter in peft's safetensors format, the positions and the config: no pickle.
    assert files == [
        "adapter/README.md",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "config.json",
        "model.safetensors",
    ]
    with pytest.raises(ArtifactError, match="base LLM it applies to \\(tiny\\)"):
        RecSysLLM.from_pretrained(folder)
    loaded = RecSysLLM.from_pretrained(folder, copy.deepcopy(base_copy))
    assert not loaded.training
    batch = collate(multitask_examples(tok, markers)[:2], markers[2])
    del batch["labels"]
    with torch.no_grad():
        assert torch.allclose(model.eval()(**batch).logits, loaded(**batch).logits, atol=1e-5)
    adapter = folder / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-64])  # a truncated copy
    with pytest.raises(ArtifactError, match="corrupt: adapter/adapter_model.safetensors"):
        RecSysLLM.from_pretrained(folder, base_copy)


def test_amazon_reviews_become_explanation_examples(tmp_path):
    fixture = Path(__file__).parent / "fixtures" / "amazon-books"
    shutil.copytree(fixture, tmp_path / "datasets" / "amazon-books")
    data = dataset_data(load_dataset("amazon-books", Settings(cache_dir=tmp_path)))
    texts = [line for path in fixture.iterdir() for line in path.read_text().splitlines()]
    tok = tokenizer(tuple(texts))
    tok.add_special_tokens({"additional_special_tokens": list(MARKER_TOKENS)})
    markers = tok.convert_tokens_to_ids(list(MARKER_TOKENS))
    writer = TaskWriter(tok, markers, data.titles, 10, [0.1, 0.3, 0.6], explanation_tokens=8)
    reader = next(h for h in data.histories.values() if len(h.items) == 3)
    assert reader.reviews[0] == "A gripping story with characters I cared about."
    catalog = sorted(data.titles)

    def answers(history):
        examples = writer.training_examples(history, random.Random(0), 3, catalog, False)
        return [tok.decode([t for t in e.labels if t >= 0]) for e in examples]

    # The last (target) item's review, cut to the explanation length, is one answer.
    assert "Too slow and the dialogue felt flat , <|rec_end|>" in answers(reader)
    without_reviews = UserHistory(reader.profile, reader.items, reader.ratings)
    assert len(answers(without_reviews)) == len(answers(reader)) - 1
