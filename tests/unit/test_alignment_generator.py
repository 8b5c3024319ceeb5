"""The asynchronous generator: its own process, snapshots refreshed exactly every N iterations."""

from __future__ import annotations

import pytest
import torch

from models.alignment.policy import adapter_state, attach_lora
from models.alignment.resampling import resampled_items
from tests.unit.alignment_helpers import (
    WORDS,
    BagOfWords,
    TinyKnowledgeRecommender,
    random_instances,
    tiny_llm,
    toy_sampler,
)
from workers.alignment.generator import (
    AlignmentTask,
    KnowledgeSampler,
    SamplingConfig,
    adapter_checksum,
)
from workers.alignment.trainer import AlignmentTrainer, TrainerConfig

N_ITEMS = 7


def _sampler(resample: str = "last_item", k_items: int = 1) -> KnowledgeSampler:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    encode = BagOfWords()
    histories, lengths, targets = random_instances(24, N_ITEMS, 3, generator)
    cached = torch.as_tensor(encode([" ".join(WORDS[3 : 3 + i]) for i in range(N_ITEMS)]))
    task = AlignmentTask(
        histories=histories,
        lengths=lengths,
        targets=targets,
        prompts=[""] + [f"item {WORDS[3 + i]} about" for i in range(N_ITEMS - 1)],
        knowledge=cached,
        resample=resample,
        k_items=k_items,
    )
    policy = attach_lora(tiny_llm(1), 4, 8, 0.0, ["q_proj", "v_proj"])
    return toy_sampler(
        policy,
        TinyKnowledgeRecommender(N_ITEMS, 8, knowledge=cached),
        TinyKnowledgeRecommender(N_ITEMS, 8),
        encode,
        task,
        SamplingConfig(batch_size=4, max_new_tokens=3, temperature=1.0, top_p=1.0),
    )


def test_async_generator_refreshes_its_snapshot_exactly_every_n_iterations():
    sampler = _sampler()
    config = TrainerConfig(
        iterations=30,
        refresh_interval=6,
        alpha=0.1,
        llm_learning_rate=0.05,
        queue_batches=2,
        threads_per_process=1,
    )
    trainer = AlignmentTrainer(sampler, config)
    run = trainer.run("async")

    assert run.refreshes == [6, 12, 18, 24, 30]
    assert run.iterations == 30 and len(run.records) == 30
    # Every batch the generator made came from the initial parameters or from one of the
    # snapshots sent, with exactly that snapshot's adapter values.
    fresh_versions = {version for version, _ in run.batch_checksums}
    assert fresh_versions <= {0, *run.refreshes}
    assert any(version > 0 for version in fresh_versions), run.batch_checksums
    for version, checksum in run.batch_checksums:
        assert checksum == pytest.approx(run.refresh_checksums[version], rel=1e-9)
    # The snapshots differ: the adapters were being trained meanwhile.
    assert len(set(run.refresh_checksums.values())) == len(run.refresh_checksums)
    # The generator worked on copies: the trainer's own adapters are the newest ones.
    assert adapter_checksum(adapter_state(trainer.policy)) == pytest.approx(
        run.refresh_checksums[30], rel=1e-9
    )
    assert run.reused_batches + len(run.batch_checksums) == 30


def test_sync_mode_samples_with_the_live_parameters():
    sampler = _sampler()
    config = TrainerConfig(iterations=3, refresh_interval=50, alpha=0.1, llm_learning_rate=0.05)
    run = AlignmentTrainer(sampler, config).run("sync")
    assert [version for version, _ in run.batch_checksums] == [0, 1, 2]
    checksums = [checksum for _, checksum in run.batch_checksums]
    assert len(set(checksums)) == 3  # each batch saw the adapters after the previous update
    assert run.reused_batches == 0


def test_resampled_items_per_choice():
    item_seq = torch.tensor([[5, 6, 7, 0], [3, 0, 0, 0]])
    lengths = torch.tensor([3, 1])
    targets = torch.tensor([9, 4])
    assert resampled_items(item_seq, lengths, targets, "last_item").tolist() == [[7], [3]]
    assert resampled_items(item_seq, lengths, targets, "target_item").tolist() == [[9], [4]]
    assert resampled_items(item_seq, lengths, targets, "k_items", 2).tolist() == [[7, 6], [3, 0]]
    with pytest.raises(ValueError, match="resample must be one of"):
        resampled_items(item_seq, lengths, targets, "first_item")


def test_k_items_sums_the_texts_of_each_instance():
    sampler = _sampler("k_items", k_items=2)
    experience = sampler.sample(torch.arange(6))
    used = (experience.items > 0).sum().item()
    assert len(experience.texts) == used == len(experience.row_instance)
    assert torch.equal(
        torch.bincount(experience.row_instance, minlength=6), (experience.items > 0).sum(1)
    )
    # Each instance's table differs from the cache exactly in its re-sampled rows.
    assert experience.vectors[experience.items == 0].abs().sum() == 0
    run = AlignmentTrainer(sampler, TrainerConfig(iterations=2, refresh_interval=1, alpha=0.1)).run(
        "sync"
    )
    assert all(torch.isfinite(torch.tensor(r.mean_ratio)) for r in run.records)


def test_per_instance_knowledge_on_the_real_sasrec():
    """p(y|x,s) with one instance's re-sampled rows equals the model's own scores once its
    table holds those rows (the fusion layer's set_knowledge, what alignment publishes)."""
    from models.alignment.recommender import replace_rows, target_log_probs_with_knowledge
    from models.sequential import build_recommender

    torch.manual_seed(0)
    table = torch.randn(N_ITEMS, 5)
    model = build_recommender(
        "sasrec", N_ITEMS, {"hidden_size": 8, "max_seq_length": 4}, knowledge=table
    ).eval()
    item_seq = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0]])
    lengths = torch.tensor([3, 1])
    targets = torch.tensor([5, 6])
    items = torch.tensor([[3], [6]])
    vectors = torch.randn(2, 1, 5)
    tables = replace_rows(table, items, vectors)
    with torch.no_grad():
        log_p = target_log_probs_with_knowledge(model, tables, item_seq, lengths, targets)
        model.fusion.set_knowledge(tables[1])
        direct = torch.log_softmax(model.full_scores(item_seq[1:], lengths[1:]), -1)[0, 6]
    assert log_p[1].item() == pytest.approx(direct.item(), abs=1e-5)
    assert not torch.equal(tables[0][3], table[3]) and torch.equal(tables[0][4], table[4])
