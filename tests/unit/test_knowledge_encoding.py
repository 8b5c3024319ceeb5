"""The real all-MiniLM-L6-v2 through `TextEncoder`: unit vectors, batching-independent,
and meaning-preserving."""

import numpy as np
import pytest

from models.knowledge.encoding import TextEncoder
from streamrec.assets import load_text_encoder

TEXTS = [
    "A gritty crime thriller about a professional thief and the detective chasing him.",
    "A crime drama following a detective who hunts a gang of bank robbers.",
    "An animated comedy for children about toys that come alive.",
    "Short.",
]


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.fixture(scope="module")
def encoder():
    loaded = load_text_encoder()
    return TextEncoder(loaded.model, loaded.tokenizer, loaded.max_length)


def test_vectors_are_unit_float32_rows(encoder):
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (4, encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_a_vector(encoder):
    together = encoder.encode(TEXTS, batch_size=4)
    alone = np.concatenate([encoder.encode([text], batch_size=1) for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_similar_texts_are_closer(encoder):
    heist, crime, toys, _ = encoder.encode(TEXTS)
    assert heist @ crime > heist @ toys + 0.2


def test_rows_come_back_in_the_order_given(encoder):
    """Texts are batched by length inside; each row is still its own text's vector."""
    forward = encoder.encode(TEXTS, batch_size=2)
    backward = encoder.encode(TEXTS[::-1], batch_size=2)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    assert encoder.max_length == 256  # all-MiniLM-L6-v2's sentence-transformers limit


def test_no_texts_and_bad_batch(encoder):
    assert encoder.encode([]).shape == (0, encoder.dim)
    with pytest.raises(ValueError):
        encoder.encode(TEXTS, batch_size=0)
