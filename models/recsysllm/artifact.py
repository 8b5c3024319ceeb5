"""The folder a registry version of RecSysLLM holds: the model (LoRA adapter or
full weights), its tokenizer, the catalog titles and the user profiles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from models.recsysllm.modeling_recsysllm import RecSysLLM
from models.recsysllm.textualise import UserProfile, entity
from models.recsysllm.trie import EntityTrie


@dataclass
class RecSysLLMArtifact:
    model: RecSysLLM
    tokenizer: object
    titles: dict[int, str]  # item id -> title
    profiles: dict[int, UserProfile]  # user id -> profile
    base_llm: str  # what the adapter was trained on ("" for full weights)

    def __post_init__(self):
        self.item_tokens = {
            item: self.tokenizer.encode(entity(title).text, add_special_tokens=False)
            for item, title in self.titles.items()
        }
        self.item_of = {tuple(tokens): item for item, tokens in self.item_tokens.items()}
        self.trie = EntityTrie(self.item_tokens.values())


def save_artifact(folder: Path, artifact: RecSysLLMArtifact) -> Path:
    artifact.model.save(folder)
    artifact.tokenizer.save_pretrained(folder / "tokenizer")
    catalog = {
        "base_llm": artifact.base_llm,
        "titles": {str(item): title for item, title in artifact.titles.items()},
        "profiles": {str(user): asdict(p) for user, p in artifact.profiles.items()},
    }
    (folder / "catalog.json").write_text(json.dumps(catalog))
    return folder


def load_artifact(
    folder: Path, load_base: Callable[[str], object] | None = None
) -> RecSysLLMArtifact:
    """`load_base(path)` loads the base LLM of a LoRA version (not needed otherwise)."""
    from transformers import AutoTokenizer

    from models.recsysllm.modeling_recsysllm import add_marker_tokens

    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    catalog = json.loads((folder / "catalog.json").read_text())
    base = None
    if catalog["base_llm"]:
        base = load_base(catalog["base_llm"])
        add_marker_tokens(tokenizer, base)
    return RecSysLLMArtifact(
        model=RecSysLLM.load(folder, base),
        tokenizer=tokenizer,
        titles={int(item): title for item, title in catalog["titles"].items()},
        profiles={int(u): UserProfile(**p) for u, p in catalog["profiles"].items()},
        base_llm=catalog["base_llm"],
    )
