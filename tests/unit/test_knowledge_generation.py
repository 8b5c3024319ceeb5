"""Generation with a tiny random Llama over the real SmolLM2 tokenizer (batching, padding,
order, cache), what alignment hands the encoder, and one short run of the real SmolLM2
(it writes parsable knowledge)."""

import numpy as np
import pytest
import torch
from transformers import StoppingCriteria

from models.knowledge.cache import KnowledgeCache
from models.knowledge.generation import KnowledgeGenerator
from models.knowledge.parsing import PARSE_OUTCOMES, answer_complete
from models.knowledge.prompts import template_for
from streamrec.assets import load_llm
from tests.unit.knowledge_helpers import MOVIES, real_tokenizer, tiny_llm
from workers.knowledge_pipeline import generate_cached, parse_counts

MOVIES_TEMPLATE = template_for("movies")


pytestmark = pytest.mark.usefixtures("torch_on_one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return real_tokenizer()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llm(tokenizer)


def test_batched_left_padded_generation_equals_one_at_a_time(tokenizer, tiny):
    batched = KnowledgeGenerator(tiny, tokenizer, MOVIES_TEMPLATE, batch_size=5, max_new_tokens=8)
    single = KnowledgeGenerator(tiny, tokenizer, MOVIES_TEMPLATE, batch_size=1, max_new_tokens=8)
    whole = KnowledgeGenerator(
        tiny, tokenizer, MOVIES_TEMPLATE, batch_size=5, max_new_tokens=8, prefix_cache=False
    )
    prompts = [batched.prompt(item) for item in MOVIES]
    lengths = {len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts}
    assert len(lengths) > 1  # the batch really is padded
    together = batched.raw_answers(prompts)
    alone = [single.raw_answers([prompt])[0] for prompt in prompts]
    assert together == alone == whole.raw_answers(prompts)
    assert whole.stats.prefilled_tokens == whole.stats.prompt_tokens
    assert whole.stats.prefix_hits == 0


class _AnswerComplete(StoppingCriteria):
    """The generator's stop rule, for transformers' own `generate`."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        answer = self.tokenizer.decode(input_ids[0, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([answer_complete(MOVIES_TEMPLATE.response_prefix + answer)])


def uncached_greedy(model, tokenizer, prompt: str, max_new_tokens: int, penalty: float) -> str:
    """The reference: transformers' greedy `generate` on the whole prompt, one item alone."""
    batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    length = batch["input_ids"].shape[1]
    output = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        repetition_penalty=penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        stopping_criteria=[_AnswerComplete(tokenizer, length)],
    )
    answer = tokenizer.decode(output[0, length:], skip_special_tokens=True)
    return MOVIES_TEMPLATE.response_prefix + answer


def test_prefix_cache_gives_the_texts_of_uncached_greedy_decoding():
    # The real SmolLM2: its rows finish at different steps and leave the batch.
    model, tokenizer = load_llm()
    budget = 64
    generator = KnowledgeGenerator(
        model, tokenizer, MOVIES_TEMPLATE, len(MOVIES), budget, repetition_penalty=1.1
    )
    prompts = [generator.prompt(item) for item in MOVIES]
    assert len({len(ids) for ids in tokenizer(prompts, add_special_tokens=False).input_ids}) > 1
    texts = generator.generate(MOVIES)
    reference = [uncached_greedy(model, tokenizer, prompt, budget, 1.1) for prompt in prompts]
    assert [text.raw for text in texts] == reference
    stats = generator.stats
    shared = len(generator.shared_prefix_ids())
    assert shared >= 20 and stats.prefix_hits == len(MOVIES)
    # Each item's shared prefix was prefilled once, not once per item.
    assert stats.prefilled_tokens == stats.prompt_tokens - (len(MOVIES) - 1) * shared
    assert stats.generated_tokens < len(MOVIES) * budget  # some row stopped early
    assert stats.prefill_s > 0 and stats.decode_s > 0
    # The stored prefix is only read: a second batch from it gives the same texts.
    assert [text.raw for text in generator.generate(MOVIES[:2])] == reference[:2]
    assert generator.stats.prefix_hits == len(MOVIES) + 2


def test_generate_keeps_the_items_order_and_reports_each_batch(tokenizer, tiny):
    generator = KnowledgeGenerator(tiny, tokenizer, MOVIES_TEMPLATE, batch_size=2, max_new_tokens=4)
    batches = []
    texts = generator.generate(MOVIES, on_batch=batches.append)
    assert [text.item_id for text in texts] == [item.item_id for item in MOVIES]
    assert sorted(len(batch) for batch in batches) == [1, 2, 2]
    for text in texts:
        assert text.raw.startswith(MOVIES_TEMPLATE.response_prefix)
        assert text.parse in PARSE_OUTCOMES
    assert generator.generate([]) == []


def test_cache_is_hit_on_a_second_run(tokenizer, tiny, tmp_path):
    generator = KnowledgeGenerator(tiny, tokenizer, MOVIES_TEMPLATE, batch_size=4, max_new_tokens=4)
    path = tmp_path / "cache.sqlite"
    first_cache = KnowledgeCache(path, "tiny@1", MOVIES_TEMPLATE.version)
    first = generate_cached(generator, first_cache, MOVIES[:3])
    assert (first_cache.hits, first_cache.misses) == (0, 3)
    first_cache.close()

    second_cache = KnowledgeCache(path, "tiny@1", MOVIES_TEMPLATE.version)
    calls = []
    generator.raw_answers = lambda prompts: calls.append(prompts) or []
    second = generate_cached(generator, second_cache, MOVIES[:3])
    assert calls == [] and (second_cache.hits, second_cache.misses) == (3, 0)
    assert second == first
    # Another LLM version or prompt version is another key: nothing cached for it.
    other = KnowledgeCache(path, "tiny@2", MOVIES_TEMPLATE.version)
    assert other.get_many(MOVIES[:3]) == {}


def test_smollm2_writes_knowledge_that_parses():
    model, tokenizer = load_llm()
    generator = KnowledgeGenerator(model, tokenizer, MOVIES_TEMPLATE, max_new_tokens=12)
    (text,) = generator.generate(MOVIES[4:5])
    # The response prefix opens the JSON, so even a cut-off answer yields a description.
    assert parse_counts([text]) == {"json": 0, "repaired": 1, "raw": 0}
    assert len(text.description.split()) >= 3


def test_lora_adapter_is_merged_and_named_in_the_llm_version(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    from streamrec.settings import Settings
    from workers.knowledge_pipeline import load_knowledge_llm

    tiny = tiny_llm(tokenizer, seed=1)  # get_peft_model changes the model it wraps
    tiny.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    adapted = get_peft_model(tiny, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:  # B starts at zero; a trained adapter has moved it
            torch.nn.init.normal_(parameter, std=0.5)
    adapted.save_pretrained(tmp_path / "adapter")
    settings = Settings(data_dir=tmp_path)
    settings.knowledge.llm_path = str(tmp_path / "llm")
    base = load_knowledge_llm(settings)
    merged = load_knowledge_llm(settings, adapter=str(tmp_path / "adapter"))
    assert merged.version.startswith(base.version + "+lora:")
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    q_name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(
        dict(merged.model.named_parameters())[q_name], dict(base.model.named_parameters())[q_name]
    )
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        load_knowledge_llm(settings, adapter=str(tmp_path / "llm"))


class RecordingEncoder:
    """Keeps what alignment hands the text encoder; a vector of each text's length."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return np.array([[float(len(text))] for text in texts], dtype=np.float32)


def test_alignment_encodes_each_items_llm_text_alone(tokenizer, tiny):
    """The facts are their own channel, which alignment never rewrites: the LLM channel's
    rows are the aligned LLM's texts, encoded alone as `knowledge generate` encodes them."""
    from workers.alignment.data import DocumentOf
    from workers.alignment.job import regenerate_knowledge

    infos = [None, *MOVIES[:3]]  # by inner id
    encode = RecordingEncoder()
    table = torch.zeros(len(infos), 1)
    rewritten = regenerate_knowledge(
        tiny, tokenizer, MOVIES_TEMPLATE, infos, [1, 3], encode, table, 2, 6
    )
    knowledge = KnowledgeGenerator(tiny, tokenizer, MOVIES_TEMPLATE, 2, 6).generate(
        [MOVIES[0], MOVIES[2]]
    )
    expected = [k.text for k in knowledge]
    assert encode.texts == expected
    assert not any(text.startswith("Toy Story (1995)") for text in expected)
    assert rewritten[:, 0].tolist() == [0.0, len(expected[0]), 0.0, len(expected[1])]

    sampled = 'A heist film.", "summarization": "For crime fans."}'
    assert DocumentOf(MOVIES_TEMPLATE, infos)(2, sampled) == "A heist film. For crime fans."


def test_grouped_attention_gives_eager_attentions_logits_and_texts(tokenizer):
    """The knowledge LLM's CPU attention reads each key/value head once for its query heads;
    left-padded prefill and cached decoding give what eager attention gives (the same
    arithmetic; only the matmuls' shapes, so their rounding, differ)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.knowledge import attention

    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,  # three query heads per key/value head, as SmolLM2
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    batch = tokenizer(
        ["A short one", "and a much longer prompt than that"],
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    answers = {}
    for name in ("eager", attention.NAME):
        model.set_attn_implementation(name)
        with torch.inference_mode():
            logits = model(**batch).logits
        generator = KnowledgeGenerator(
            model, tokenizer, MOVIES_TEMPLATE, batch_size=3, max_new_tokens=12
        )
        answers[name] = (logits, [k.text for k in generator.generate(MOVIES)])
    (eager_logits, eager_texts), (grouped_logits, grouped_texts) = answers.values()
    real = batch["attention_mask"].bool()  # padded positions' outputs are never read
    torch.testing.assert_close(eager_logits[real], grouped_logits[real], rtol=1e-5, atol=1e-5)
    assert eager_texts == grouped_texts
