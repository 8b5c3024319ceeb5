"""The folder a registry version of RecSysLLM holds: the model's artifact (the LoRA
adapter or the full weights, the intra-entity positions, config.json; see
`RecSysLLM.save_pretrained`), its tokenizer, and catalog.json with the catalog titles and
the user profiles. config.json is written last and covers every file here."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from models import artifacts
from models.recsysllm.modeling_recsysllm import FAMILY, RecSysLLM
from models.recsysllm.textualise import UserProfile, entity
from models.recsysllm.trie import EntityTrie

CATALOG_FILE = "catalog.json"
TOKENIZER_FOLDER = "tokenizer"


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

    def save_pretrained(self, folder: Path | str) -> Path:
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder / TOKENIZER_FOLDER)
        catalog = {
            "titles": {str(item): title for item, title in self.titles.items()},
            "profiles": {str(user): asdict(p) for user, p in self.profiles.items()},
        }
        (folder / CATALOG_FILE).write_text(json.dumps(catalog))
        return self.model.save_pretrained(folder, self.base_llm)

    @classmethod
    def from_pretrained(
        cls,
        folder: Path | str,
        load_base: Callable[[str], object] | None = None,
        device: str = "cpu",
    ) -> RecSysLLMArtifact:
        """`load_base(path)` loads the base LLM of a LoRA version (not needed otherwise)."""
        from transformers import AutoTokenizer

        from models.recsysllm.modeling_recsysllm import add_marker_tokens

        folder = Path(folder)
        base_llm = artifacts.load_config(folder, FAMILY)["base_llm"]
        tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_FOLDER)
        catalog = json.loads((folder / CATALOG_FILE).read_text())
        base = None
        if base_llm:
            if load_base is None:
                raise artifacts.ArtifactError(f"{folder} needs its base LLM {base_llm}")
            base = load_base(base_llm)
            add_marker_tokens(tokenizer, base)
        return cls(
            model=RecSysLLM.from_pretrained(folder, base, device),
            tokenizer=tokenizer,
            titles={int(item): title for item, title in catalog["titles"].items()},
            profiles={int(u): UserProfile(**p) for u, p in catalog["profiles"].items()},
            base_llm=base_llm,
        )
