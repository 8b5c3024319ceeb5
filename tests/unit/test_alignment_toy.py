"""Algorithm 1 end to end on a toy task where a keyword in an item's knowledge predicts it.

The synthetic world: users pick next the item whose knowledge text says "great".
The recommender has learned that (it was trained on such knowledge); the cached
knowledge of every item lacks the word. Aligning the tiny LLM to the
recommender must make it write the keyword more often, and so raise the mean
p(y|x,s)/p(y|x) over the iterations.
"""

from __future__ import annotations

import torch

from models.alignment.policy import attach_lora
from models.alignment.recommender import replace_rows, target_log_probs_with_knowledge
from tests.unit.alignment_helpers import (
    KEYWORD,
    WORDS,
    BagOfWords,
    TinyKnowledgeRecommender,
    random_instances,
    tiny_llm,
    toy_sampler,
)
from workers.alignment.generator import AlignmentTask, SamplingConfig
from workers.alignment.trainer import AlignmentTrainer, TrainerConfig

N_ITEMS = 9  # 1..8, 0 is padding
CONTENT = [w for w in WORDS[3:] if w != KEYWORD]


def _pretrain(model, histories, lengths, targets, tables=None, steps: int = 40):
    """Train on the toy world: with `tables`, each target's knowledge carries the keyword."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        if tables is None:
            scores = model.full_scores(histories, lengths)
            loss = torch.nn.functional.cross_entropy(scores, targets)
        else:
            loss = -target_log_probs_with_knowledge(
                model, tables, histories, lengths, targets
            ).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _keyword_rate(records) -> float:
    texts = [text for record in records for text in record.texts]
    return sum(KEYWORD in text.split() for text in texts) / len(texts)


def test_alignment_raises_the_ratio_and_the_keyword():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    encode = BagOfWords()
    cached = torch.as_tensor(encode([" ".join(CONTENT)] * N_ITEMS))
    histories, lengths, targets = random_instances(32, N_ITEMS, 4, generator)

    frozen = TinyKnowledgeRecommender(N_ITEMS, 16)
    _pretrain(frozen, histories, lengths, targets)
    recommender = TinyKnowledgeRecommender(N_ITEMS, 16, knowledge=cached)
    world = torch.as_tensor(encode([f"{KEYWORD} movie story"])).expand(len(targets), 1, -1)
    _pretrain(
        recommender,
        histories,
        lengths,
        targets,
        tables=replace_rows(cached, targets.view(-1, 1), world),
    )

    policy = attach_lora(
        tiny_llm(3),
        rank=4,
        alpha=8,
        dropout=0.0,
        target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
    )
    task = AlignmentTask(
        histories=histories,
        lengths=lengths,
        targets=targets,
        prompts=[""] + [f"item {CONTENT[i]} knowledge about" for i in range(N_ITEMS - 1)],
        knowledge=cached,
        resample="target_item",
    )
    sampler = toy_sampler(
        policy,
        recommender,
        frozen,
        encode,
        task,
        SamplingConfig(batch_size=12, max_new_tokens=4, temperature=1.0, top_p=1.0),
    )
    config = TrainerConfig(
        iterations=24,
        refresh_interval=10,
        alpha=0.01,
        llm_learning_rate=0.01,
        rec_learning_rate=0.001,
        keep_texts=True,
    )
    run = AlignmentTrainer(sampler, config).run("sync")

    early, late = run.records[:6], run.records[-6:]
    assert _keyword_rate(late) > _keyword_rate(early) + 0.15
    assert run.mean_ratio(last=6) > run.mean_ratio(first=6) * 1.2
    assert all(record.kl >= 0 for record in run.records)
