"""The online trainer's batch path: a poll decoded in one pass, ids mapped as arrays, one
user's examples packed into one sequence whose loss is the loss of the examples apart,
and a poll absorbed at once (held out, queued, skipped, grown, offsets)."""

import random

import numpy as np
import pytest
import torch
from kafka.consumer.fetcher import ConsumerRecord

from models.sequential import build_recommender
from streamrec.settings import Settings
from streamrec.v1 import events_pb2
from tests.unit.recommender_helpers import TINY_SASREC
from workers.trainer import CycleStats, OnlineTrainer
from workers.trainer_examples import (
    Example,
    ItemIndex,
    chain_tensors,
    decode_values,
    is_held_out,
    pack,
    replay_chains,
    to_tensors,
)

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")
WINDOW = 6


def stream_examples(user: int, items: list[int], cap: int = 50) -> list[Example]:
    """What the stream worker makes of one user's events: history before each -> its item."""
    return [Example(items[max(0, n - cap) : n], items[n], user) for n in range(1, len(items))]


def wire_batch(examples: list[tuple[str, int, list[int], int]]) -> bytes:
    batch = events_pb2.TrainingExampleBatch()
    for event_id, user, history, target in examples:
        batch.examples.add(event_id=event_id, user_id=user, history=history, target_item_id=target)
    return batch.SerializeToString()


def test_a_poll_is_decoded_in_one_pass_and_garbage_is_reported_by_position():
    values = [
        wire_batch([("a", 1, [10, 11], 12), ("b", 2, [], 13)]),
        b"\xffnot protobuf",
        wire_batch([("c", 1, [10, 11, 12], 14)]),
    ]
    wire, undecodable = decode_values(values)
    assert undecodable == [1]
    assert wire.event_ids == ["a", "b", "c"] and wire.users == [1, 2, 1]
    assert wire.targets == [12, 13, 14] and wire.items == [10, 11, 10, 11, 12]
    assert wire.starts().tolist() == [0, 2, 2, 5]


def test_item_ids_are_mapped_as_arrays_and_unknown_ones_found():
    index = ItemIndex(np.array([0, 500, 7, 90_000_000_000], dtype=np.int64))
    assert index.lookup([7, 500, 90_000_000_000, 8, 0]).tolist() == [2, 1, 3, -1, -1]
    assert index.unseen([8, 7, 8, 1]) == [1, 8]
    assert ItemIndex(np.array([0])).lookup([3]).tolist() == [-1]


def targets_of(chains, max_len):
    """(input window, position -> target) per row, as plain lists."""
    seqs, lens, targets = chain_tensors(chains, max_len, "cpu")
    rows = []
    for row in range(len(chains)):
        n = int(lens[row])
        trained = {p: int(t) for p, t in enumerate(targets[row].tolist()) if t}
        rows.append((seqs[row, :n].tolist(), trained))
    return rows


def test_one_users_continuing_examples_become_one_sequence_with_every_target():
    walk = [1, 2, 3, 4, 5]
    chains = pack(stream_examples(7, walk), WINDOW)
    assert len(chains) == 1
    # Input 1 2 3 4; each position trains the item after it: exactly the four examples.
    assert targets_of(chains, WINDOW) == [([1, 2, 3, 4], {0: 2, 1: 3, 2: 4, 3: 5})]


def test_packing_skips_a_held_out_event_keeps_users_apart_and_stays_in_the_window():
    first = stream_examples(1, [1, 2, 3, 4, 5])
    del first[1]  # 1 2 -> 3 held out: the chain goes on, 3 is input only
    other = stream_examples(2, [9, 8])
    unrelated = [Example([11, 12], 13, 1)]  # user 1 again, but not continuing the walk
    chains = pack([first[0], other[0], *first[1:], *unrelated], WINDOW)
    rows = targets_of(chains, WINDOW)
    assert rows[0] == ([1, 2, 3, 4], {0: 2, 2: 4, 3: 5})
    assert rows[1] == ([9], {0: 8})
    assert rows[2] == ([11, 12], {1: 13})
    # A walk longer than the window: every target once, each chain inside its window.
    long_walk = stream_examples(3, list(range(1, 16)), cap=WINDOW)
    chains = pack(long_walk, WINDOW)
    trained = [t for _, row in targets_of(chains, WINDOW) for t in row.values()]
    assert sorted(trained) == list(range(2, 16))
    assert all(max(chain.distances) < WINDOW for chain in chains)


def test_a_packed_sequence_has_the_loss_of_its_examples_trained_apart():
    torch.manual_seed(0)
    model = build_recommender("sasrec", n_items=20, config=TINY_SASREC).eval()
    examples = stream_examples(4, [3, 9, 1, 17, 5, 12]) + stream_examples(5, [2, 6, 8])
    apart = to_tensors(examples, WINDOW, "cpu")
    packed = chain_tensors(pack(examples, WINDOW), WINDOW, "cpu")
    assert len(packed[0]) == 2 < len(examples)
    assert model.loss(*packed).item() == pytest.approx(model.loss(*apart).item(), rel=1e-5)


def test_replay_trains_the_newest_targets_of_stored_windows():
    replay = [Example([4, 5, 6], 7, 1)]
    chains = replay_chains(replay, 5, WINDOW, random.Random(0))
    # Five wanted; a window of three history items trains at most three: two windows.
    assert targets_of(chains, WINDOW) == [
        ([4, 5, 6], {0: 5, 1: 6, 2: 7}),
        ([4, 5, 6], {1: 6, 2: 7}),
    ]
    assert replay_chains(replay, 0, WINDOW, random.Random(0)) == []


def record(partition: int, offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(
        "training-examples", partition, None, offset, 1_790_000_000_000, 0,
        None, value, [], None, -1, len(value), -1,
    )  # fmt: skip


def test_a_poll_is_absorbed_at_once(tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.workers.device = "cpu"
    settings.workers.trainer_holdout_fraction = 0.3
    settings.workers.trainer_max_history = WINDOW
    trainer = OnlineTrainer(settings)
    trainer.model = build_recommender("sasrec", n_items=4, config=TINY_SASREC)
    trainer.baseline = build_recommender("sasrec", n_items=4, config=TINY_SASREC)
    trainer.item_ids = np.array([0, 100, 101, 102], dtype=np.int64)
    trainer.index_of = {100: 1, 101: 2, 102: 3}
    trainer.items = ItemIndex(trainer.item_ids)
    trainer._new_optimizer()
    ids = [f"event-{n}" for n in range(40)]
    rows = [(event_id, 9, [100, 101, 102][: 1 + n % 3], 101) for n, event_id in enumerate(ids)]
    rows[5] = ("new", 9, [100, 555], 556)  # two items the model has never seen
    rows[6] = ("empty", 9, [], 100)
    messages = [
        record(0, 10, wire_batch(rows[:20])),
        record(1, 3, b"\xffnot protobuf"),
        record(0, 11, wire_batch(rows[20:])),
    ]
    stats = CycleStats()
    trainer.absorb_batch(messages, stats)

    assert trainer.absorbed == {0: 12, 1: 4}  # the garbage record's offset passed too
    assert trainer.index_of[555] == 4 and trainer.index_of[556] == 5
    assert trainer.model.n_items == trainer.baseline.n_items == 6
    held = [row for row in rows if row[2] and is_held_out(row[0], 0.3)]
    assert stats.skipped == 1 and stats.held_out == len(held) == len(trainer.holdout)
    assert len(trainer.pending) == 40 - 1 - len(held)
    mapped = next(e for e in [*trainer.pending, *trainer.holdout] if e.target == 5)
    assert mapped.history == [1, 4] and mapped.user == 9
    trainer.step(stats)
    assert stats.trained == 40 - 1 - len(held) and not trainer.pending
    assert stats.sequences < stats.trained  # packed, not one sequence per example
