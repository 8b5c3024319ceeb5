"""GenRec (Cao & Liò): a BART encoder-decoder over `user_u item_a item_b ... <mask>`.

Each encoder token's input is its token embedding plus, for the sub-tokens
of a user or an item, that ID's embedding (one table for users, one for
items; every sub-token of an ID gets the same row); BART adds the position
embedding itself. The decoder spells the next item's sub-tokens, and beam
search walks the catalog's item trie so every generated item exists.

`save_pretrained` / `from_pretrained` keep a model in the shared artifact folder
(`models/artifacts.py`): config.json, model.safetensors, ids.safetensors (the external
item and user id of each index) and the tokenizer's files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import BartConfig, BartForConditionalGeneration

from models import artifacts
from models.genrec.configuration_genrec import GenRecConfig
from models.genrec.tokenization import GenRecTokenizer, build_tokenizer, load_tokenizer
from models.genrec.trie import ItemTrie

FAMILY = "genrec"
# BART's learned positions start at this offset (its embedding table has two extra rows).
BART_POSITION_OFFSET = 2


@dataclass
class EncoderBatch:
    """Right-padded encoder inputs; `user_ids` / `item_ids` give each token's ID row (0: none)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    user_ids: torch.Tensor
    item_ids: torch.Tensor

    def to(self, device) -> EncoderBatch:
        return EncoderBatch(*(t.to(device) for t in self.__dict__.values()))


@dataclass
class Generated:
    """One request's generated items (model indices), best first, with beam log-probabilities."""

    items: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


class GenRec(nn.Module):
    def __init__(
        self,
        config: GenRecConfig,
        tokenizer: GenRecTokenizer,
        bart: BartForConditionalGeneration | None = None,
    ):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        if bart is None:
            if not config.bart_config:
                config.bart_config = self._small_bart_config(config, tokenizer).to_dict()
            bart = BartForConditionalGeneration(BartConfig(**config.bart_config))
        else:
            config.bart_config = bart.config.to_dict()
        self.bart = bart
        width = bart.config.d_model
        self.user_embeddings = nn.Embedding(config.n_users, width, padding_idx=0)
        self.item_embeddings = nn.Embedding(config.n_items, width, padding_idx=0)
        nn.init.normal_(self.user_embeddings.weight, std=bart.config.init_std)
        nn.init.normal_(self.item_embeddings.weight, std=bart.config.init_std)
        with torch.no_grad():
            self.user_embeddings.weight[0].zero_()
            self.item_embeddings.weight[0].zero_()
        self._item_tokens = {i: tokenizer.item_tokens(i) for i in range(1, config.n_items)}
        self.trie = ItemTrie(self._item_tokens, tokenizer.eos_id)
        self._user_tokens: dict[int, list[int]] = {}
        # The longest encoder text of fixed-width IDs (0: BPE pieces vary, pad per batch).
        self._encoder_length = 0 if config.bart_path else self._longest_text(config, tokenizer)

    @staticmethod
    def _longest_text(config: GenRecConfig, tokenizer: GenRecTokenizer) -> int:
        """<s>, the user, max_history items and the mask (or max_history + 1 items, one
        masked), </s>."""
        return 3 + tokenizer.user_width + (config.max_history + 1) * tokenizer.item_width

    @staticmethod
    def _small_bart_config(config: GenRecConfig, tokenizer: GenRecTokenizer) -> BartConfig:
        return BartConfig(
            vocab_size=tokenizer.vocab_size,
            d_model=config.d_model,
            encoder_layers=config.encoder_layers,
            decoder_layers=config.decoder_layers,
            encoder_attention_heads=config.attention_heads,
            decoder_attention_heads=config.attention_heads,
            encoder_ffn_dim=config.ffn_dim,
            decoder_ffn_dim=config.ffn_dim,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            init_std=config.init_std,
            max_position_embeddings=GenRec._longest_text(config, tokenizer),
            pad_token_id=tokenizer.pad_id,
            bos_token_id=tokenizer.bos_id,
            eos_token_id=tokenizer.eos_id,
            decoder_start_token_id=tokenizer.eos_id,
            forced_eos_token_id=None,
        )

    @classmethod
    def from_settings(cls, settings, n_items: int, n_users: int) -> GenRec:
        """A new model: the BART checkpoint at `settings.bart_path`, else the small config."""
        config = GenRecConfig.from_settings(settings, n_items, n_users)
        tokenizer = build_tokenizer(config.bart_path, n_users, n_items, config.piece_digits)
        bart = None
        if config.bart_path:
            bart = BartForConditionalGeneration.from_pretrained(config.bart_path)
        return cls(config, tokenizer, bart)

    def save_pretrained(
        self,
        folder: Path | str,
        item_ids: np.ndarray,
        user_ids: np.ndarray,
        extra: dict | None = None,
    ) -> Path:
        """A self-contained folder (the unit the registry versions)."""
        folder = Path(folder)
        artifacts.save_module(folder, self)
        ids = {
            "item_ids": torch.as_tensor(np.asarray(item_ids, dtype=np.int64)),
            "user_ids": torch.as_tensor(np.asarray(user_ids, dtype=np.int64)),
        }
        artifacts.save_tensors(folder, ids, artifacts.IDS_FILE)
        self.tokenizer.save(folder)
        return artifacts.save_config(
            folder, FAMILY, FAMILY, self.config.to_dict(), extra=extra or {}
        )

    @classmethod
    def from_pretrained(cls, folder: Path | str, device: str = "cpu") -> LoadedGenRec:
        """The saved model in eval mode on `device`, with its id maps."""
        folder = Path(folder)
        document = artifacts.load_config(folder, FAMILY)
        model = cls(GenRecConfig.from_dict(document["config"]), load_tokenizer(folder))
        artifacts.load_module(folder, model, device=device)
        ids = artifacts.load_tensors(folder, artifacts.IDS_FILE)
        return LoadedGenRec(
            model.to(device).eval(),
            ids["item_ids"].numpy(),
            ids["user_ids"].numpy(),
            document["extra"],
        )

    @property
    def device(self) -> torch.device:
        return self.item_embeddings.weight.device

    def item_tokens(self, item: int) -> list[int]:
        return self._item_tokens[item]

    def _user(self, user: int) -> list[int]:
        tokens = self._user_tokens.get(user)
        if tokens is None:
            tokens = self._user_tokens[user] = self.tokenizer.user_tokens(user)
        return tokens

    def encode(
        self,
        users: list[int],
        histories: list[list[int]],
        mask_positions: list[int | None] | None = None,
    ) -> EncoderBatch:
        """Encoder inputs for `user_u item_a ... `: the mask replaces the item at its position
        (pretraining), or is appended after the history when the position is None.

        Users outside the user table (0 or too large: not seen in training) get no user-ID
        embedding; histories must hold known item indices and are cut to the last
        `max_history` items (the caller windows pretraining sequences itself).
        """
        tok = self.tokenizer
        rows = []
        for row, (user, history) in enumerate(zip(users, histories, strict=True)):
            mask_at = None if mask_positions is None else mask_positions[row]
            if mask_at is None:
                history = list(history[-self.config.max_history :])
            known_user = user if 0 < user < self.config.n_users else 0
            tokens, user_rows, item_rows = [tok.bos_id], [0], [0]
            user_tokens = self._user(known_user)
            tokens += user_tokens
            user_rows += [known_user] * len(user_tokens)
            item_rows += [0] * len(user_tokens)
            for position, item in enumerate(history):
                if position == mask_at:
                    tokens.append(tok.mask_id)
                    user_rows.append(0)
                    item_rows.append(0)
                    continue
                item_tokens = self._item_tokens[item]
                tokens += item_tokens
                user_rows += [0] * len(item_tokens)
                item_rows += [item] * len(item_tokens)
            if mask_at is None:
                tokens.append(tok.mask_id)
                user_rows.append(0)
                item_rows.append(0)
            tokens.append(tok.eos_id)
            user_rows.append(0)
            item_rows.append(0)
            rows.append((tokens, user_rows, item_rows))
        # Left padding to a fixed length: the mask and the latest items then always sit at
        # the same positions, so learned absolute positions read "the item before the mask"
        # the same way in every row and batch (right padding moves it with the history).
        length = max([self._encoder_length, *(len(r[0]) for r in rows)])
        shape = (len(rows), length)
        input_ids = torch.full(shape, tok.pad_id, dtype=torch.long)
        attention = torch.zeros(shape, dtype=torch.long)
        user_ids = torch.zeros(shape, dtype=torch.long)
        item_ids = torch.zeros(shape, dtype=torch.long)
        for row, (tokens, user_rows, item_rows) in enumerate(rows):
            n = len(tokens)
            input_ids[row, length - n :] = torch.tensor(tokens)
            attention[row, length - n :] = 1
            user_ids[row, length - n :] = torch.tensor(user_rows)
            item_ids[row, length - n :] = torch.tensor(item_rows)
        return EncoderBatch(input_ids, attention, user_ids, item_ids)

    def input_embeddings(self, batch: EncoderBatch) -> torch.Tensor:
        """Token embedding + user-ID or item-ID embedding (row 0, a zero vector, elsewhere)."""
        tokens = self.bart.get_input_embeddings()(batch.input_ids)
        return tokens + self.user_embeddings(batch.user_ids) + self.item_embeddings(batch.item_ids)

    def _targets(self, items: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs and labels: the item's sub-tokens then </s> (labels -100 past it)."""
        sequences = [[*self._item_tokens[item], self.tokenizer.eos_id] for item in items]
        length = max(len(s) for s in sequences)
        labels = torch.full((len(items), length), -100, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            labels[row, : len(sequence)] = torch.tensor(sequence)
        start = torch.full((len(items), 1), self.bart.config.decoder_start_token_id)
        decoder_inputs = torch.cat([start, labels[:, :-1]], dim=1)
        decoder_inputs[decoder_inputs == -100] = self.tokenizer.pad_id
        return decoder_inputs, labels

    def loss(self, batch: EncoderBatch, targets: list[int]) -> torch.Tensor:
        """Cross-entropy of spelling each target item's sub-tokens (teacher forcing)."""
        decoder_inputs, labels = self._targets(targets)
        batch = batch.to(self.device)
        output = self.bart(
            inputs_embeds=self.input_embeddings(batch),
            attention_mask=batch.attention_mask,
            decoder_input_ids=decoder_inputs.to(self.device),
            labels=labels.to(self.device),
        )
        return output.loss

    def _next_log_probs(self, prefixes, encoder_states, encoder_mask) -> torch.Tensor:
        start = torch.full((len(prefixes), 1), self.bart.config.decoder_start_token_id)
        tokens = torch.cat([start, torch.tensor(prefixes, dtype=torch.long)], dim=1)
        hidden = self.bart.model.decoder(
            input_ids=tokens.to(self.device),
            encoder_hidden_states=encoder_states,
            encoder_attention_mask=encoder_mask,
        ).last_hidden_state[:, -1]
        logits = self.bart.lm_head(hidden) + self.bart.final_logits_bias
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def generate(
        self,
        batch: EncoderBatch,
        k: int,
        beam_size: int,
        banned: list[set[int]] | None = None,
    ) -> list[Generated]:
        """Top-k items per row by trie-constrained beam search (k <= beam_size).

        Every beam follows the item trie, so each finished beam is a catalog item and no
        item appears twice; `banned` items (e.g. the history) are closed off in the trie.
        """
        if not 0 < k <= beam_size:
            raise ValueError(f"k must be between 1 and the beam size {beam_size}, got {k}")
        batch = batch.to(self.device)
        encoder_states = self.bart.model.encoder(
            inputs_embeds=self.input_embeddings(batch), attention_mask=batch.attention_mask
        ).last_hidden_state
        rows = len(batch.input_ids)
        closed = [self.trie.banned_counts(b) for b in banned] if banned else [Counter()] * rows
        beams = [[((), 0.0)] for _ in range(rows)]
        finished = [[] for _ in range(rows)]
        eos = self.tokenizer.eos_id
        while any(beams):
            owners = [r for r in range(rows) for _ in beams[r]]
            flat = [beam for r in range(rows) for beam in beams[r]]
            by_length: dict[int, list[int]] = {}
            for index, (prefix, _) in enumerate(flat):
                by_length.setdefault(len(prefix), []).append(index)
            log_probs = torch.empty(len(flat), self.bart.config.vocab_size, device=self.device)
            for indices in by_length.values():
                owner = torch.tensor([owners[i] for i in indices], device=self.device)
                log_probs[indices] = self._next_log_probs(
                    [flat[i][0] for i in indices],
                    encoder_states[owner],
                    batch.attention_mask[owner],
                )
            allowed = torch.zeros_like(log_probs, dtype=torch.bool)
            for index, (prefix, _) in enumerate(flat):
                allowed[index, self.trie.allowed(prefix, closed[owners[index]])] = True
            base = torch.tensor([score for _, score in flat], device=self.device)
            totals = torch.where(allowed, base[:, None] + log_probs, float("-inf")).cpu()
            next_beams = [[] for _ in range(rows)]
            start = 0
            for r in range(rows):
                count = len(beams[r])
                if count == 0:
                    continue
                scores = totals[start : start + count].reshape(-1)
                open_count = int(torch.isfinite(scores).sum())
                width = beam_size - len(finished[r])
                best = scores.topk(min(width, open_count))
                picks = zip(best.values.tolist(), best.indices.tolist(), strict=True)
                for score, flat_index in picks:
                    beam, token = divmod(flat_index, totals.shape[1])
                    path = (*flat[start + beam][0], token)
                    if token == eos:
                        finished[r].append((self.trie.item_of(path), score))
                    else:
                        next_beams[r].append((path, score))
                start += count
            beams = next_beams
        results = []
        for found in finished:
            found.sort(key=lambda pair: -pair[1])
            results.append(Generated([i for i, _ in found[:k]], [s for _, s in found[:k]]))
        return results


@dataclass
class LoadedGenRec:
    model: GenRec
    item_ids: np.ndarray  # external item id per model index (0 at index 0)
    user_ids: np.ndarray  # external user id per model index (0 at index 0)
    extra: dict
