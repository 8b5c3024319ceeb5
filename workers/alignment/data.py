"""The alignment job's data: the dataset's items as prompts see them, the training
instances, the documents and encoder of sampled knowledge, and the two recommenders
(Rec_f without knowledge, Rec with it) from checkpoint folders or trained here through
the sequential family's one training path (`workers.recommender_training.train_run`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from workers.recommender_training import ProtocolData, train_run

log = logging.getLogger(__name__)


def item_infos(dataset) -> list:
    """The prompt's view of each item, by inner id ([0] is None)."""
    from models.knowledge.prompts import ItemInfo

    infos = [None] * (dataset.num_items + 1)
    for inner, item in dataset.items.items():
        infos[inner] = ItemInfo(
            item_id=item.external_id,
            title=item.title or f"item {item.raw_id}",
            year=item.year,
            categories=tuple(item.genres),
        )
    return infos


class DocumentOf:
    """(item, raw sampled continuation) -> the LLM channel's text to encode: parsed like the
    knowledge job parses it (the prompt ends with the answer's opening, put back), alone
    (the facts are their own channel, which alignment never rewrites), so sampled and
    cached vectors mean the same."""

    def __init__(self, template, infos: list):
        self.template = template
        self.infos = infos

    def __call__(self, item: int, continuation: str) -> str:
        from models.knowledge.parsing import parse_knowledge

        return parse_knowledge(self.template.response_prefix + continuation).text


class Encoder:
    """The text encoder as a picklable callable (the generator process gets a copy)."""

    def __init__(self, text_encoder, batch_size: int = 64):
        self.text_encoder = text_encoder
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.text_encoder.encode(texts, batch_size=self.batch_size)


def sample_rows(count: int, limit: int = 0, seed: int = 0) -> np.ndarray:
    """`limit` of `count` rows drawn with `seed`, in order (all of them when 0)."""
    index = np.arange(count)
    if limit and limit < count:
        index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
    return index


def split_tensors(split, limit: int = 0, seed: int = 0):
    """(histories, lengths, targets) of a split, optionally a seeded random subset."""
    index = sample_rows(len(split), limit, seed)
    return (
        torch.as_tensor(split.histories[index], dtype=torch.long),
        torch.as_tensor(split.lengths[index], dtype=torch.long),
        torch.as_tensor(split.targets[index], dtype=torch.long),
    )


def chat_prompts(tokenizer, template, infos: list) -> list[str]:
    """The chat-formatted prompt of every item, by inner id ([0] empty)."""
    from models.knowledge.generation import KnowledgeGenerator

    generator = KnowledgeGenerator(None, tokenizer, template)
    return [""] + [generator.prompt(info) for info in infos[1:]]


def pretrained_recommender(
    settings,
    data: ProtocolData,
    knowledge: torch.Tensor | None,
    checkpoint: str,
    device,
    facts: torch.Tensor | None = None,
) -> torch.nn.Module:
    """A checkpoint folder's recommender, else one trained here like `streamrec train`
    trains it (windows of each user's training sequence, early stopping on validation
    NDCG@10, at most `alignment.pretrain_epochs`); Rec_f when `knowledge` is None."""
    if checkpoint:
        from models.sequential import SequentialRecommender

        loaded = SequentialRecommender.from_pretrained(Path(checkpoint), device=str(device))
        return loaded.model.to(device)
    alignment = settings.alignment
    config = settings.recommender.model_copy(
        update={
            "epochs": alignment.pretrain_epochs,
            "batch_size": alignment.pretrain_batch_size,
            "learning_rate": alignment.pretrain_learning_rate,
            "device": str(device),
        }
    )
    kind = "with" if knowledge is not None else "without"
    log.info("training %s %s knowledge", alignment.recommender, kind)
    run = train_run(
        config, data, alignment.recommender, alignment.seed, knowledge=knowledge, facts=facts
    )
    log.info("%s %s knowledge: test %s", alignment.recommender, kind, run.test)
    return run.model
