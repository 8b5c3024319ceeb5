"""GenRec: tokens and ID embeddings, the item trie, constrained beam search, learning a toy."""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.artifacts import ArtifactError
from models.genrec import DigitTokenizer, GenRec
from models.genrec.tokenization import PretrainedTokenizer, load_tokenizer
from streamrec.datasets.splits import leave_one_out
from streamrec.settings import GenRecSettings
from tests.unit.genrec_helpers import N_ITEMS, N_USERS, tiny_model
from workers.genrec_training import (
    Example,
    evaluate,
    evaluation_examples,
    next_item_examples,
    pretraining_examples,
    train_genrec,
    train_phase,
    training_sequences,
)
from workers.recommender_training import EPOCH, VALID_NDCG

pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


def test_digit_tokens_are_fixed_width_and_distinct():
    tokenizer = DigitTokenizer(N_USERS, N_ITEMS, piece_digits=1)
    written = {tuple(tokenizer.item_tokens(i)) for i in range(1, N_ITEMS)}
    assert len(written) == N_ITEMS - 1
    assert {len(tokens) for tokens in written} == {2}
    assert tokenizer.item_tokens(7) == [tokenizer.vocab["item_0"], tokenizer.vocab["7"]]
    assert tokenizer.user_tokens(3) == [tokenizer.vocab["user_3"]]


def test_two_digit_pieces_write_a_four_digit_catalog_in_two_tokens(tmp_path):
    tokenizer = DigitTokenizer(n_users=944, n_items=1683)  # MovieLens-100K's tables
    vocab = tokenizer.vocab
    assert tokenizer.item_tokens(168) == [vocab["item_01"], vocab["68"]]
    assert tokenizer.item_tokens(1682) == [vocab["item_16"], vocab["82"]]
    assert tokenizer.user_tokens(943) == [vocab["user_09"], vocab["43"]]
    written = {tuple(tokenizer.item_tokens(i)) for i in range(1, 1683)}
    assert len(written) == 1682 and {len(tokens) for tokens in written} == {2}
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.piece_digits == 2 and loaded.item_tokens(168) == tokenizer.item_tokens(168)


def test_trie_admits_exactly_the_catalog_item_sequences():
    model = tiny_model()
    eos = model.tokenizer.eos_id
    expected = {(*model.item_tokens(i), eos): i for i in range(1, N_ITEMS)}
    admitted = dict(model.trie.sequences())
    assert admitted == expected
    # An ID past the catalog (31) and a half-written item are not items.
    tokenizer = model.tokenizer
    assert model.trie.item_of((*tokenizer._write("item", 31, 2), eos)) is None
    assert model.trie.item_of(tuple(model.item_tokens(5))) is None
    assert model.trie.allowed((tokenizer.vocab["item_4"],)) == []
    assert model.trie.allowed(tuple(model.item_tokens(5))) == [eos]


def test_trie_closes_banned_items_and_their_exhausted_prefixes():
    model = tiny_model()
    vocab = model.tokenizer.vocab
    banned = model.trie.banned_counts(range(1, 10))  # item_01..item_09: all of item_0's
    assert vocab["item_0"] not in model.trie.allowed((), banned)
    assert vocab["item_1"] in model.trie.allowed((), banned)
    some_banned = model.trie.banned_counts([11, 12])
    allowed = model.trie.allowed((vocab["item_1"],), some_banned)
    assert vocab["1"] not in allowed and vocab["2"] not in allowed and vocab["3"] in allowed


def test_every_sub_token_of_an_id_gets_that_ids_embedding():
    model = tiny_model()
    batch = model.encode([4, 0], [[12, 7, 30], [5]])
    added = model.input_embeddings(batch) - model.bart.get_input_embeddings()(batch.input_ids)
    for row in range(2):
        for position in range(batch.input_ids.shape[1]):
            item, user = int(batch.item_ids[row, position]), int(batch.user_ids[row, position])
            if item:
                expected = model.item_embeddings.weight[item]
            elif user:
                expected = model.user_embeddings.weight[user]
            else:
                expected = torch.zeros_like(added[row, position])
            torch.testing.assert_close(added[row, position], expected)
    # Item 12's two sub-tokens and user 4's one sub-token, tagged with their IDs.
    assert batch.item_ids[0].tolist().count(12) == 2
    assert batch.user_ids[0].tolist().count(4) == 1
    assert batch.user_ids[1].tolist().count(0) == batch.input_ids.shape[1]  # unknown user
    # Tables are separate: user 4 and item 4 are different rows.
    assert not torch.equal(model.user_embeddings.weight[4], model.item_embeddings.weight[4])


def test_beam_search_returns_distinct_catalog_items_outside_the_history():
    model = tiny_model().eval()
    batch = model.encode([1, 2], [[3, 4, 5], [6]])
    results = model.generate(batch, k=10, beam_size=12, banned=[{3, 4, 5}, {6}])
    for result, history in zip(results, ([3, 4, 5], [6]), strict=True):
        assert len(result.items) == 10 == len(set(result.items))
        assert all(0 < item < N_ITEMS for item in result.items)
        assert not set(result.items) & set(history)
        assert result.scores == sorted(result.scores, reverse=True)
    with pytest.raises(ValueError, match="beam size"):
        model.generate(batch, k=13, beam_size=12)


def test_pretraining_never_sees_the_valid_and_test_items():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 5), 8)
    items = np.concatenate([rng.permutation(np.arange(1, 20))[:8] for _ in range(4)])
    time_key = np.tile(np.arange(8, dtype=np.float32), 4)
    splits = leave_one_out(users, items, time_key, max_seq_length=50)
    sequences = training_sequences(splits["train"])
    held_out = {
        int(u): {int(t)} for u, t in zip(splits["test"].users, splits["test"].targets, strict=True)
    }
    for u, t in zip(splits["valid"].users, splits["valid"].targets, strict=True):
        held_out[int(u)].add(int(t))
    for user, sequence in sequences.items():
        assert sequence == items[users == user][:6].tolist()
    examples = pretraining_examples(sequences, 30, max_history=4, rng=random.Random(0))
    assert len(examples) == 4 * 30
    for example in examples:
        assert len(example.history) == 4
        assert example.history[example.mask_at] == example.target
        assert not set(example.history) & held_out[example.user]


CYCLE = 9  # items 1..9 in a loop; the trie still offers all 30 items


def toy_examples() -> list[Example]:
    """A deterministic next item: after item i comes i % 9 + 1, whoever the user is."""
    rng = random.Random(1)
    examples = []
    for _ in range(500):
        first = rng.randint(1, CYCLE)
        history = [(first - 1 + step) % CYCLE + 1 for step in range(rng.randint(1, 5))]
        target = history[-1] % CYCLE + 1
        examples.append(Example(rng.randint(1, N_USERS - 1), tuple(history), None, target))
    return examples


def test_a_deterministic_next_item_is_learned():
    model = tiny_model(seed=3)
    settings = GenRecSettings(
        batch_size=32, learning_rate=3e-3, warmup_ratio=0.1, beam_size=4, eval_batch_size=100
    )
    examples = toy_examples()
    train_phase(model, examples[:400], epochs=8, settings=settings, description="toy", seed=0)
    result = evaluate(model, examples[400:], settings, k=1)
    assert result["hr@5"] >= 0.9  # with k=1 every cut-off is HR@1
    assert result["valid_item_rate"] == 1.0
    # Masked items are never generated: with each target masked, none is found.
    masked = [{example.target} for example in examples[400:]]
    assert evaluate(model, examples[400:], settings, k=1, masked=masked)["hr@5"] == 0.0


def test_evaluation_masks_every_earlier_item_not_only_the_encoded_window():
    items = np.arange(1, 10)
    splits = leave_one_out(
        np.ones(9, dtype=np.int64), items, np.arange(9, dtype=np.float32), max_seq_length=50
    )
    catalog = {inner: SimpleNamespace(external_id=inner) for inner in range(1, 10)}
    dataset = SimpleNamespace(name="line", splits=splits, items=catalog, num_items=9)
    (test,), (masked,) = evaluation_examples(dataset, "test", max_history=3)
    assert test.history == (6, 7, 8) and test.target == 9
    assert set(masked.tolist()) == set(range(1, 9))
    (valid,), (masked,) = evaluation_examples(dataset, "valid", max_history=3)
    assert valid.target == 8 and set(masked.tolist()) == set(range(1, 8))


def test_fine_tuning_stops_after_patience_epochs_and_keeps_the_best_weights():
    model = tiny_model(seed=4)
    settings = GenRecSettings(batch_size=50, patience=2, warmup_ratio=0.0)
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    weights_seen = []

    def validate(trained: GenRec) -> float:
        assert not trained.training  # scored in eval mode
        weights_seen.append(trained.item_embeddings.weight.detach().clone())
        return next(scripted)

    summary = train_phase(
        model, toy_examples()[:100], 6, settings, "toy", seed=0, validate=validate
    )
    # Epochs 3 and 4 did not beat epoch 2's 0.3: stopped after epoch 4, never saw the 0.9.
    assert summary["epochs_run"] == 4 and summary["best_epoch"] == 2
    assert summary["valid"] == [0.1, 0.3, 0.2, 0.25]
    assert summary["steps"] == 4 * 2
    torch.testing.assert_close(model.item_embeddings.weight, weights_seen[1])
    assert not torch.equal(weights_seen[1], weights_seen[3])


def test_train_genrec_pretrains_then_fine_tunes_against_validation():
    rng = np.random.default_rng(0)
    users, items, times = [], [], []
    for user in range(1, N_USERS):
        first = int(rng.integers(1, CYCLE + 1))
        for step in range(10):
            users.append(user)
            items.append((first - 1 + step) % CYCLE + 1)
            times.append(100 * user + step)
    splits = leave_one_out(
        np.array(users), np.array(items), np.array(times, dtype=np.float32), max_seq_length=50
    )
    catalog = {inner: SimpleNamespace(external_id=inner) for inner in range(1, N_ITEMS)}
    dataset = SimpleNamespace(
        name="cycle", splits=splits, items=catalog, num_items=N_ITEMS - 1, num_users=N_USERS - 1
    )
    settings = GenRecSettings(
        d_model=16, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=32,
        max_history=4, pretrain_epochs=1, pretrain_masks_per_user=4, finetune_epochs=3,
        patience=1, batch_size=16, beam_size=5, default_k=5, device="cpu",
    )  # fmt: skip
    model, summary = train_genrec(dataset, settings, pretrain=True, seed=0)
    assert summary["pretraining"]["steps"] == 2  # 8 users x 4 masked copies, batches of 16
    tuning = summary["fine_tuning"]
    assert 2 <= tuning["epochs_run"] <= 3 and len(tuning["valid"]) == tuning["epochs_run"]
    assert tuning["valid"][tuning["best_epoch"] - 1] == max(tuning["valid"])
    assert not model.training
    # Progress is exported as the recommenders' gauges, labelled genrec.
    assert EPOCH.labels("genrec")._value.get() == tuning["epochs_run"]
    assert VALID_NDCG.labels("genrec")._value.get() == tuning["valid"][-1]


def test_save_pretrained_round_trip_generates_the_same(tmp_path):
    model = tiny_model().eval()
    item_ids = np.arange(N_ITEMS, dtype=np.int64) * 10
    user_ids = np.arange(N_USERS, dtype=np.int64) + 100
    folder = tmp_path / "genrec"
    model.save_pretrained(folder, item_ids, user_ids, {"metrics": {"ndcg@10": 0.5}})
    assert sorted(path.name for path in folder.iterdir()) == [
        "config.json",
        "genrec_vocab.json",
        "ids.safetensors",
        "model.safetensors",
    ]
    loaded = GenRec.from_pretrained(folder)
    assert loaded.extra["metrics"] == {"ndcg@10": 0.5}
    np.testing.assert_array_equal(loaded.item_ids, item_ids)
    np.testing.assert_array_equal(loaded.user_ids, user_ids)
    batch = model.encode([1], [[2, 3]])
    assert loaded.model.generate(batch, 5, 5) == model.generate(batch, 5, 5)
    # One changed byte, the size kept: refused by the hash config.json holds.
    weights = bytearray((folder / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ArtifactError, match="corrupt: model.safetensors"):
        GenRec.from_pretrained(folder)
    (folder / "ids.safetensors").unlink()
    with pytest.raises(ArtifactError, match="ids.safetensors is missing"):
        GenRec.from_pretrained(folder)


def test_next_item_examples_keep_the_last_items():
    splits = leave_one_out(
        np.ones(9, dtype=np.int64),
        np.arange(1, 10),
        np.arange(9, dtype=np.float32),
        max_seq_length=50,
    )
    (test,) = next_item_examples(splits["test"], max_history=3)
    assert test.history == (6, 7, 8) and test.target == 9 and test.mask_at is None


def _tiny_bart_checkpoint(folder):
    """A BART checkpoint folder with its own (BPE) tokenizer, as a user would bring one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = [f"user_{u} " + " ".join(f"item_{i}" for i in range(1, N_ITEMS)) for u in range(9)]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=120, special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    tokenizer.save_pretrained(folder)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
    )
    BartForConditionalGeneration(config).save_pretrained(folder)


def test_a_bart_checkpoint_by_path_brings_its_tokenizer(tmp_path):
    _tiny_bart_checkpoint(tmp_path / "bart")
    settings = GenRecSettings(bart_path=str(tmp_path / "bart"), max_history=5)
    model = GenRec.from_settings(settings, N_ITEMS, N_USERS).eval()
    assert isinstance(model.tokenizer, PretrainedTokenizer)
    assert model.bart.config.d_model == 16 == model.item_embeddings.weight.shape[1]
    assert len(model.trie) == N_ITEMS - 1  # every item spelled differently by the BPE
    batch = model.encode([2], [[3, 4, 5]])
    (found,) = model.generate(batch, k=6, beam_size=6)
    assert len(set(found.items)) == 6 and all(0 < i < N_ITEMS for i in found.items)
    zero = np.zeros(1, dtype=np.int64)
    model.save_pretrained(tmp_path / "ckpt", np.r_[zero, np.arange(1, N_ITEMS)], np.arange(N_USERS))
    loaded = GenRec.from_pretrained(tmp_path / "ckpt").model
    assert loaded.generate(batch, k=6, beam_size=6) == [found]
