"""GenRec: generative next-item recommendation with a BART encoder-decoder."""

from models.genrec.configuration_genrec import GenRecConfig
from models.genrec.modeling_genrec import (
    EncoderBatch,
    Generated,
    GenRec,
    LoadedGenRec,
)
from models.genrec.tokenization import DigitTokenizer, GenRecTokenizer, build_tokenizer
from models.genrec.trie import ItemTrie

__all__ = [
    "DigitTokenizer",
    "EncoderBatch",
    "GenRec",
    "GenRecConfig",
    "GenRecTokenizer",
    "Generated",
    "ItemTrie",
    "LoadedGenRec",
    "build_tokenizer",
]
