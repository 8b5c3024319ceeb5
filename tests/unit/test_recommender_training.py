"""Training glue: the protocol's data from splits, windows, a seed trained to early
stopping and saved, the first model published, knowledge folders, CLI errors."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from models.sequential import SequentialRecommender
from models.training import evaluate, training_windows
from streamrec.cli import app
from streamrec.datasets.splits import leave_one_out
from streamrec.registry import ModelRegistry
from streamrec.settings import Settings
from tests.threads import one_torch_thread
from tests.unit.recommender_helpers import N_ITEMS, TINY_SASREC, successor_table
from workers.recommender_training import (
    item_texts,
    knowledge_variant,
    load_knowledge,
    protocol_data,
    run_variant,
    train_first_model,
)


def walk_dataset(users: int = 40, length: int = 12) -> SimpleNamespace:
    """Users walking the successor cycle, one interaction per second, split by RecBole's rule."""
    successor = successor_table()
    rng = np.random.default_rng(0)
    user_ids, item_ids, times = [], [], []
    for user in range(1, users + 1):
        item = int(rng.integers(1, N_ITEMS))
        for step in range(length):
            user_ids.append(user)
            item_ids.append(item)
            times.append(1000 * user + step)
            item = int(successor[item])
    splits = leave_one_out(
        np.array(user_ids), np.array(item_ids), np.array(times, dtype=np.float32), 6
    )
    items = {inner: SimpleNamespace(external_id=100 + inner) for inner in range(1, N_ITEMS)}
    return SimpleNamespace(name="walks", splits=splits, items=items, num_items=N_ITEMS - 1)


def test_protocol_data_rebuilds_sequences_and_masks_earlier_items():
    data = protocol_data(walk_dataset(users=3, length=12))
    successor = successor_table()
    for sequence in data.train_sequences:
        assert len(sequence) == 10  # 12 interactions minus the valid and test targets
        assert (successor[torch.from_numpy(sequence[:-1])].numpy() == sequence[1:]).all()
    for row in range(3):
        assert set(data.valid.masked[row]) == set(data.train_sequences[row].tolist())
        expected = set(data.train_sequences[row].tolist()) | {int(data.valid.targets[row])}
        assert set(data.test.masked[row]) == expected - {int(data.test.targets[row])}
    assert data.item_ids[0] == 0 and data.item_ids[5] == 105


def test_training_windows_cover_every_target_once():
    sequences = [np.arange(1, 15), np.array([7, 8])]
    windows = training_windows(sequences, max_length=5, stride=5)
    targets = windows.targets[windows.targets > 0].tolist()
    assert sorted(targets) == sorted([*range(2, 15), 8])
    # The window ending at the sequence's end has a full history of 5.
    assert windows.inputs[0].tolist() == [9, 10, 11, 12, 13]
    assert windows.targets[0].tolist() == [10, 11, 12, 13, 14]
    overlapping = training_windows(sequences, max_length=5, stride=2)
    assert len(overlapping) > len(windows)


def test_a_seed_trains_to_early_stopping_and_is_saved(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        recommender={
            "model_configs": {"sasrec": TINY_SASREC},
            "epochs": 12,
            "patience": 3,
            "batch_size": 16,
            "learning_rate": 0.02,
            "device": "cpu",
        },
    )
    data = protocol_data(walk_dataset())
    folder = tmp_path / "checkpoint"
    variant, _ = knowledge_variant(settings, data, None)
    with one_torch_thread():
        row, runs = run_variant(settings, data, "sasrec", variant, [0], save_to=lambda _: folder)
    assert row["variant"] == "base" and row["seeds"] == [0]
    assert row["metrics"]["hr@5"] >= 0.9  # the walk's next item is determined
    assert row["std"]["hr@5"] == 0.0
    assert set(row["metrics"]) == {
        "hr@5",
        "hr@10",
        "hr@20",
        "ndcg@5",
        "ndcg@10",
        "ndcg@20",
        "mrr@10",
    }
    assert runs[0].fit.best_epoch <= runs[0].fit.epochs_run
    loaded = SequentialRecommender.from_pretrained(folder)
    assert loaded.extra["seed"] == 0 and loaded.extra["variant"] == "base"
    assert loaded.extra["test"] == runs[0].test
    np.testing.assert_array_equal(loaded.item_ids, data.item_ids)


def test_the_first_model_is_trained_by_the_one_loop_and_published(tmp_path):
    """What `streamrec up` serves on a fresh install: a SASRec from `train_run` (windows,
    the best validation epoch), published as the first version of recommender.family. No
    broker listens: the announcement fails and is only logged."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": f"127.0.0.1:{closed}"},
        registry={"announce_timeout_s": 1.0},
        recommender={
            "model_configs": {"sasrec": TINY_SASREC},
            "batch_size": 16,
            "learning_rate": 0.02,
            "device": "cpu",
        },
        serving={"torch_threads": 1},
    )
    with one_torch_thread():
        version = train_first_model(settings, walk_dataset(), epochs=8, max_users=30)
    assert (version.family, version.version) == ("seralm", "v000001")
    latest = ModelRegistry.from_settings(settings).latest(settings.recommender.family)
    assert latest.version == version.version
    meta = latest.metadata
    assert meta["source"] == "first-model" and meta["epochs"] == 8 and meta["users"] == 30
    assert meta["dataset"] == "walks" and meta["train_seconds"] >= 0
    assert latest.metadata["metrics"]["hr@5"] >= 0.9  # the walks are learnt, test split
    loaded = SequentialRecommender.from_pretrained(latest.path)
    assert loaded.extra["source"] == "first-model"
    assert loaded.extra["best_epoch"] <= 8
    np.testing.assert_array_equal(loaded.item_ids, protocol_data(walk_dataset()).item_ids)


def test_alignment_pretrains_rec_and_rec_f_through_the_same_path(tmp_path):
    """Alignment's two recommenders come from `train_run` too, with alignment's epochs,
    batch size and rate: Rec holds the knowledge table it was given, Rec_f none."""
    from workers.alignment.data import pretrained_recommender

    settings = Settings(
        data_dir=tmp_path,
        recommender={"model_configs": {"sasrec": TINY_SASREC}, "patience": 8},
        alignment={
            "pretrain_epochs": 8,
            "pretrain_batch_size": 16,
            "pretrain_learning_rate": 0.02,
        },
    )
    data = protocol_data(walk_dataset())
    table = torch.randn(N_ITEMS, 4)
    with one_torch_thread():
        rec = pretrained_recommender(settings, data, table, "", torch.device("cpu"))
        rec_f = pretrained_recommender(settings, data, None, "", torch.device("cpu"))
    torch.testing.assert_close(rec.fusion.knowledge, table)
    assert rec_f.fusion.knowledge is None
    for model in (rec, rec_f):
        assert evaluate(model, data.test)["hr@5"] >= 0.9


def test_knowledge_folder_maps_external_ids_and_low_resource_names(tmp_path):
    data = protocol_data(walk_dataset(users=3))
    vectors = np.eye(4, dtype=np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    np.save(tmp_path / "item_ids.npy", np.array([103, 101, 999, 130], dtype=np.int64))
    table, summary = load_knowledge(tmp_path, data.item_ids)
    assert table.shape == (N_ITEMS, 4)
    torch.testing.assert_close(table[3], torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(table[30], torch.tensor([0, 0, 0, 1.0]))
    assert table[2].abs().sum() == 0 and table[0].abs().sum() == 0
    assert summary["coverage"] == 3 / 30
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no facts knowledge"):
        knowledge_variant(settings, data, tmp_path, fraction=0.1)
    np.save(tmp_path / "facts.npy", 2 * vectors)
    variant, summary = knowledge_variant(settings, data, tmp_path, fraction=0.1)
    assert variant.name == "two_channels@0.1"
    torch.testing.assert_close(variant.knowledge, table)
    torch.testing.assert_close(variant.facts, 2 * table)
    assert set(summary["provenance"]) == {"facts", "llm"}
    facts_only, summary = knowledge_variant(settings, data, tmp_path, 1.0, "facts", ("facts",))
    assert facts_only.knowledge is None and facts_only.facts is not None
    assert set(summary["provenance"]) == {"facts"}


def test_text_mode_reads_the_llm_channel_text(tmp_path):
    records = [
        {"item_id": 101, "text": "A heist film.", "document": "Heat (1995). A heist film."},
        {"item_id": 103, "description": "A comedy.", "summarization": "For all."},  # older file
    ]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    texts = item_texts(tmp_path, np.array([0, 101, 102, 103], dtype=np.int64))
    assert texts == ["", "A heist film.", "", "A comedy. For all."]


def test_cli_errors_are_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["train", "--model", "nope"])
    assert result.exit_code == 1
    assert "unknown model 'nope'" in result.output
    assert "Traceback" not in result.output
