"""RecSysLLM on any Hugging Face causal LM.

The base model keeps its own positions; an added intra-entity position
embedding (zero-initialised, so the wrapped model starts out exactly as the base
model) is summed into the input embeddings. Training uses LoRA on the attention
and MLP projections, with the three marker tokens' embedding rows trainable
(they are new to the vocabulary and would otherwise stay indistinguishable).

`save_pretrained` writes the shared artifact folder (`models/artifacts.py`): with LoRA the
adapter, in peft's own safetensors folder, is what is versioned, and the base LLM is
loaded from where the caller's settings say.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache

from models import artifacts
from models.recsysllm.configuration_recsysllm import MARKER_TOKENS, RecSysLLMConfig
from models.recsysllm.masking import IGNORE_INDEX, InfillingExample
from models.recsysllm.trie import EntityTrie

FAMILY = "recsysllm"
ADAPTER_FOLDER = "adapter"  # peft's adapter_config.json and adapter_model.safetensors
LLM_FOLDER = "llm"  # the whole LLM, when trained without LoRA


def add_marker_tokens(tokenizer, model) -> list[int]:
    """Add the mask and span markers to the vocabulary; returns their ids."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(MARKER_TOKENS)})
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        # Distinct random rows: mean-initialised markers would look alike.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return tokenizer.convert_tokens_to_ids(list(MARKER_TOKENS))


class RecSysLLM(nn.Module):
    def __init__(self, llm, config: RecSysLLMConfig, marker_ids: list[int]):
        """`llm` is ready to train or serve (LoRA-wrapped or not); see `for_training`."""
        super().__init__()
        self.config = config
        self.marker_ids = list(marker_ids)
        self.mask_id, self.span_start_id, self.span_end_id = self.marker_ids
        self.llm = llm
        hidden = llm.config.hidden_size
        self.intra_position = nn.Embedding(config.max_intra_position, hidden)
        nn.init.zeros_(self.intra_position.weight)
        self.intra_position.requires_grad_(config.intra_positions)

    @classmethod
    def for_training(cls, base_model, config: RecSysLLMConfig, marker_ids: list[int]):
        """LoRA on the projections that exist in `base_model`, marker rows trainable."""
        if config.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            names = {module.rsplit(".", 1)[-1] for module, _ in base_model.named_modules()}
            base_model = get_peft_model(
                base_model,
                LoraConfig(
                    r=config.lora_rank,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout,
                    target_modules=[name for name in config.lora_targets if name in names],
                    trainable_token_indices={"embed_tokens": list(marker_ids)},
                    task_type="CAUSAL_LM",
                ),
            )
        return cls(base_model, config, marker_ids)

    def embed(self, input_ids: torch.Tensor, intra_positions: torch.Tensor) -> torch.Tensor:
        embeddings = self.llm.get_input_embeddings()(input_ids)
        if not self.config.intra_positions:
            return embeddings
        positions = intra_positions.clamp(max=self.config.max_intra_position - 1)
        return embeddings + self.intra_position(positions)

    def forward(self, input_ids, intra_positions, attention_mask=None, labels=None, **kwargs):
        return self.llm(
            inputs_embeds=self.embed(input_ids, intra_positions),
            attention_mask=attention_mask,
            labels=labels,
            **kwargs,
        )

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the labelled tokens, with vocabulary logits computed only
        at the positions that predict one (in any row): the spans and answers sit at the
        end of each text, so most positions of a long prompt need no 49k-wide row."""
        targets = batch["labels"][:, 1:]
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        if len(keep) == 0:
            raise ValueError("the batch has no labelled token")
        logits = self(
            batch["input_ids"],
            batch["intra_positions"],
            batch["attention_mask"],
            logits_to_keep=keep,
        ).logits
        return nn.functional.cross_entropy(
            logits.float().flatten(0, 1), targets[:, keep].flatten(), ignore_index=IGNORE_INDEX
        )

    def prefill(
        self, context: list[int], context_positions: list[int]
    ) -> tuple[DynamicCache, torch.Tensor]:
        """The key/value cache of a prompt and its last position's logits: computed once,
        then shared by every continuation (answers to score, beams to extend)."""
        output = self(
            torch.tensor([context]),
            torch.tensor([context_positions]),
            past_key_values=DynamicCache(),
            use_cache=True,
            logits_to_keep=1,
        )
        return output.past_key_values, output.logits[0, -1].float()

    def continue_from(
        self,
        cache: DynamicCache,
        input_ids: torch.Tensor,
        intra_positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of `input_ids` (one row per continuation) read after the cached prompt;
        the cache itself is left as it was. Padding may only follow a row's tokens."""
        rows = input_ids.shape[0]
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(rows)
        if attention_mask is not None:
            prompt = torch.ones((rows, cache.get_seq_length()), dtype=attention_mask.dtype)
            attention_mask = torch.cat([prompt, attention_mask], dim=1)
        return self(
            input_ids, intra_positions, attention_mask, past_key_values=cache, use_cache=True
        ).logits.float()

    @torch.no_grad()
    def sequence_scores(
        self, context: list[int], context_positions: list[int], answers: list[list[int]]
    ) -> torch.Tensor:
        """log p(answer, span end | context) for each answer (its token ids), batched."""
        cache, first = self.prefill(context, context_positions)
        examples = [
            InfillingExample(
                answer + [self.span_end_id],
                answer + [self.span_end_id],
                list(range(1, len(answer) + 1)) + [0],
            )
            for answer in answers
        ]
        batch = collate(examples, pad_id=self.span_end_id)
        logits = self.continue_from(
            cache, batch["input_ids"], batch["intra_positions"], batch["attention_mask"]
        )
        # The first answer token is predicted by the prompt's last position.
        predicting = torch.cat([first.expand(len(answers), 1, -1), logits[:, :-1]], dim=1)
        log_probs = torch.log_softmax(predicting, dim=-1)
        labels = batch["labels"]
        picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * (labels != IGNORE_INDEX)).sum(dim=1)

    @torch.no_grad()
    def beam_search_entities(
        self,
        context: list[int],
        context_positions: list[int],
        trie: EntityTrie,
        beams: int,
        max_tokens: int = 32,
        exclude: set[tuple[int, ...]] | None = None,
    ) -> list[tuple[list[int], float]]:
        """The `beams` most likely whole entities after `context`, each a trie path.

        Every step extends each partial entity only by tokens the trie allows, so
        every returned sequence is a catalog entity; the intra-entity position of
        each new token is its index in the entity (1, 2, ...). The prompt is read
        once; each step reads only the partial entities, all of the same length.
        """
        exclude = exclude or set()
        # Per prefix, how many excluded entities lie below it: a partial entity
        # with nothing else below is dropped instead of taking a beam.
        excluded_below: dict[tuple[int, ...], int] = {}
        for sequence in exclude:
            if sequence in trie:
                for end in range(len(sequence) + 1):
                    excluded_below[sequence[:end]] = excluded_below.get(sequence[:end], 0) + 1

        def viable(prefix: list[int]) -> bool:
            key = tuple(prefix)
            return trie.entities_under(prefix) > excluded_below.get(key, 0)

        cache, first = self.prefill(context, context_positions)
        live: list[tuple[list[int], float]] = [([], 0.0)]
        done: list[tuple[list[int], float]] = []
        for length in range(max_tokens):
            if not live:
                break
            if length == 0:
                step = torch.log_softmax(first, dim=-1).unsqueeze(0)
            else:
                prefixes = torch.tensor([prefix for prefix, _ in live])
                positions = torch.arange(1, length + 1).expand(len(live), length)
                logits = self.continue_from(cache, prefixes, positions)[:, -1]
                step = torch.log_softmax(logits, dim=-1)
            candidates = []
            for row, (prefix, score) in enumerate(live):
                if trie.is_entity(prefix) and tuple(prefix) not in exclude:
                    done.append((prefix, score + step[row, self.span_end_id].item()))
                for token in trie.next_tokens(prefix):
                    if viable(prefix + [token]):
                        candidates.append((prefix + [token], score + step[row, token].item()))
            candidates.sort(key=lambda pair: pair[1], reverse=True)
            live = candidates[:beams]
            done.sort(key=lambda pair: pair[1], reverse=True)
            done = done[:beams]
            if len(done) >= beams and live and live[0][1] < done[-1][1]:
                break  # no partial entity can still beat the worst finished one
        return done[:beams]

    def save_pretrained(self, folder: Path | str, base_llm: str = "") -> Path:
        """The LoRA adapter (peft's own safetensors folder) or, without LoRA, the whole LLM,
        the intra-entity position embedding and the config; `base_llm` names the LLM the
        adapter applies to, recorded for `from_pretrained`'s caller."""
        folder = Path(folder)
        self.llm.save_pretrained(folder / (ADAPTER_FOLDER if self.config.lora_rank else LLM_FOLDER))
        artifacts.save_module(folder, self.intra_position)
        return artifacts.save_config(
            folder,
            FAMILY,
            FAMILY,
            self.config.to_dict(),
            marker_ids=self.marker_ids,
            base_llm=base_llm,
        )

    @classmethod
    def from_pretrained(cls, folder: Path | str, base_model=None, device: str = "cpu") -> RecSysLLM:
        """With LoRA, `base_model` is the LLM the adapter was trained on (markers added)."""
        folder = Path(folder)
        document = artifacts.load_config(folder, FAMILY)
        config = RecSysLLMConfig.from_dict(document["config"])
        if config.lora_rank:
            from peft import PeftModel

            if base_model is None:
                raise artifacts.ArtifactError(
                    f"{folder} holds a LoRA adapter: give the base LLM it applies to "
                    f"({document['base_llm'] or 'not recorded'})"
                )
            llm = PeftModel.from_pretrained(base_model, folder / ADAPTER_FOLDER)
        else:
            from transformers import AutoModelForCausalLM

            llm = AutoModelForCausalLM.from_pretrained(folder / LLM_FOLDER)
        model = cls(llm, config, document["marker_ids"])
        artifacts.load_module(folder, model.intra_position)
        return model.to(device).eval()


def collate(examples: list[InfillingExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors (padding is masked out and carries no loss)."""
    width = max(len(example.input_ids) for example in examples)
    batch = {
        "input_ids": torch.full((len(examples), width), pad_id),
        "labels": torch.full((len(examples), width), IGNORE_INDEX),
        "intra_positions": torch.zeros((len(examples), width), dtype=torch.long),
        "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
    }
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        batch["input_ids"][row, :length] = torch.tensor(example.input_ids)
        batch["labels"][row, :length] = torch.tensor(example.labels)
        batch["intra_positions"][row, :length] = torch.tensor(example.intra_positions)
        batch["attention_mask"][row, :length] = 1
    return batch
