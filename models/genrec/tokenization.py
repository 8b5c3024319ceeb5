"""How user and item IDs become sub-tokens.

No pretrained BART tokenizer is available offline, so the default is a small
word-level vocabulary that writes an ID the way a BPE vocabulary tends to:
as fixed pieces of digits. The ID is zero-padded to the widest ID of its kind
and cut into pieces of `piece_digits` digits, the first piece carrying the
kind (with pieces of two, `item_01`, `68` is item 168 of a catalog of under
10 000). Fixed width means no item's tokens are a prefix of another's and
every item takes the same number of decoding steps (so beam scores compare
fairly); each sub-token is a real piece of the ID, which is what "every
sub-token of one ID shares that ID's embedding" is about. Two-digit pieces
halve the encoder text and the decoding steps of single digits, and the
decoder's last step sees a first piece that already names a group of 100
items instead of a chain of digits it must combine.

With a BART checkpoint, its own tokenizer writes `user_12` / `item_168` and
whatever pieces it makes are the sub-tokens.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<mask>")
VOCAB_FILE = "genrec_vocab.json"
# A checkpoint's own tokenizer is saved in this subfolder (config.json beside it is GenRec's).
TOKENIZER_FOLDER = "tokenizer"


class GenRecTokenizer(ABC):
    """Token ids for the encoder text and for the decoder's item targets."""

    pad_id: int
    bos_id: int
    eos_id: int
    mask_id: int
    vocab_size: int

    @abstractmethod
    def user_tokens(self, user: int) -> list[int]: ...

    @abstractmethod
    def item_tokens(self, item: int) -> list[int]: ...

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write what `load_tokenizer` needs beside the checkpoint."""


class DigitTokenizer(GenRecTokenizer):
    """The built-in word-level vocabulary: specials, `user_<piece>`, `item_<piece>` and the
    pieces of `piece_digits` digits."""

    def __init__(self, n_users: int, n_items: int, piece_digits: int = 2):
        if piece_digits < 1:
            raise ValueError(f"piece_digits must be at least 1, got {piece_digits}")
        self.n_users, self.n_items, self.piece_digits = n_users, n_items, piece_digits
        pieces = [str(value).zfill(piece_digits) for value in range(10**piece_digits)]
        words = [*SPECIALS]
        words += [f"user_{p}" for p in pieces] + [f"item_{p}" for p in pieces] + pieces
        self.vocab = {word: index for index, word in enumerate(words)}
        self.vocab_size = len(words)
        self.pad_id, self.bos_id, self.eos_id, _, self.mask_id = (self.vocab[s] for s in SPECIALS)
        # Tokens per ID, from the largest ID of each kind (row count minus the zero row).
        self.user_width = self._pieces(n_users - 1)
        self.item_width = self._pieces(n_items - 1)

    def _pieces(self, largest: int) -> int:
        return -(-len(str(max(largest, 1))) // self.piece_digits)

    def _write(self, kind: str, value: int, width: int) -> list[int]:
        size = self.piece_digits
        digits = str(value).zfill(width * size)
        pieces = [digits[start : start + size] for start in range(0, len(digits), size)]
        return [self.vocab[f"{kind}_{pieces[0]}"]] + [self.vocab[p] for p in pieces[1:]]

    def user_tokens(self, user: int) -> list[int]:
        return self._write("user", user, self.user_width)

    def item_tokens(self, item: int) -> list[int]:
        return self._write("item", item, self.item_width)

    def save(self, folder: Path) -> None:
        (folder / VOCAB_FILE).write_text(
            json.dumps(
                {
                    "n_users": self.n_users,
                    "n_items": self.n_items,
                    "piece_digits": self.piece_digits,
                    "vocab": self.vocab,
                }
            )
        )


class PretrainedTokenizer(GenRecTokenizer):
    """A BART checkpoint's own tokenizer writing `user_<id>` and `item_<id>`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.mask_id = tokenizer.mask_token_id
        if None in (self.pad_id, self.eos_id, self.mask_id):
            raise ValueError("the checkpoint's tokenizer needs pad, eos and mask tokens")

    def _write(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def user_tokens(self, user: int) -> list[int]:
        return self._write(f" user_{user}")

    def item_tokens(self, item: int) -> list[int]:
        return self._write(f" item_{item}")

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder / TOKENIZER_FOLDER)


def build_tokenizer(
    bart_path: str, n_users: int, n_items: int, piece_digits: int = 2
) -> GenRecTokenizer:
    """The checkpoint's tokenizer when there is a checkpoint, else the digit vocabulary."""
    if not bart_path:
        return DigitTokenizer(n_users, n_items, piece_digits)
    from transformers import AutoTokenizer

    return PretrainedTokenizer(AutoTokenizer.from_pretrained(bart_path))


def load_tokenizer(folder: Path) -> GenRecTokenizer:
    """The tokenizer saved beside a GenRec checkpoint."""
    vocab_file = folder / VOCAB_FILE
    if vocab_file.exists():
        saved = json.loads(vocab_file.read_text())
        return DigitTokenizer(saved["n_users"], saved["n_items"], saved["piece_digits"])
    from transformers import AutoTokenizer

    return PretrainedTokenizer(AutoTokenizer.from_pretrained(folder / TOKENIZER_FOLDER))
