"""How user and item IDs become sub-tokens.

No pretrained BART tokenizer is available offline, so the default is a small
word-level vocabulary: an ID is written as a fixed number of decimal digits
(zero-padded to the widest ID of its kind), the first carrying the kind
(`item_0`, `1`, `6`, `8` is item 168 of a catalog of under 10 000). Fixed
width means no item's tokens are a prefix of another's, every item takes the
same number of decoding steps (so beam scores compare fairly), and each
sub-token is a real piece of the ID, which is what "every sub-token of one ID
shares that ID's embedding" is about.

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

    def __init__(self, n_users: int, n_items: int):
        # Widths from the largest ID (row count minus the zero row).
        self.user_width = len(str(max(n_users - 1, 1)))
        self.item_width = len(str(max(n_items - 1, 1)))

    @abstractmethod
    def user_tokens(self, user: int) -> list[int]: ...

    @abstractmethod
    def item_tokens(self, item: int) -> list[int]: ...

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write what `load_tokenizer` needs beside the checkpoint."""


class DigitTokenizer(GenRecTokenizer):
    """The built-in word-level vocabulary: specials, `user_d`, `item_d` and the digits."""

    def __init__(self, n_users: int, n_items: int):
        super().__init__(n_users, n_items)
        words = [*SPECIALS]
        words += [f"user_{d}" for d in range(10)] + [f"item_{d}" for d in range(10)]
        words += [str(d) for d in range(10)]
        self.vocab = {word: index for index, word in enumerate(words)}
        self.vocab_size = len(words)
        self.pad_id, self.bos_id, self.eos_id, _, self.mask_id = (self.vocab[s] for s in SPECIALS)
        self.n_users, self.n_items = n_users, n_items

    def _write(self, kind: str, value: int, width: int) -> list[int]:
        digits = str(value).zfill(width)
        return [self.vocab[f"{kind}_{digits[0]}"]] + [self.vocab[d] for d in digits[1:]]

    def user_tokens(self, user: int) -> list[int]:
        return self._write("user", user, self.user_width)

    def item_tokens(self, item: int) -> list[int]:
        return self._write("item", item, self.item_width)

    def save(self, folder: Path) -> None:
        (folder / VOCAB_FILE).write_text(
            json.dumps({"n_users": self.n_users, "n_items": self.n_items, "vocab": self.vocab})
        )


class PretrainedTokenizer(GenRecTokenizer):
    """A BART checkpoint's own tokenizer writing `user_<id>` and `item_<id>`."""

    def __init__(self, tokenizer, n_users: int, n_items: int):
        super().__init__(n_users, n_items)
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


def build_tokenizer(bart_path: str, n_users: int, n_items: int) -> GenRecTokenizer:
    """The checkpoint's tokenizer when there is a checkpoint, else the digit vocabulary."""
    if not bart_path:
        return DigitTokenizer(n_users, n_items)
    from transformers import AutoTokenizer

    return PretrainedTokenizer(AutoTokenizer.from_pretrained(bart_path), n_users, n_items)


def load_tokenizer(folder: Path, bart_path: str, n_users: int, n_items: int) -> GenRecTokenizer:
    """The tokenizer saved beside a GenRec checkpoint."""
    if (folder / VOCAB_FILE).exists():
        return DigitTokenizer(n_users, n_items)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_FOLDER)
    return PretrainedTokenizer(tokenizer, n_users, n_items)
