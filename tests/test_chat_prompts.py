"""Chat-template prompts on a byte-level BPE tokenizer with a ChatML template.

A tiny GPT-2-style tokenizer (" Paris" is the single token "ĠParis") is trained in
the test, wrapped with a ChatML chat template, and paired with a tiny random
Llama: the prompts, the answer equivalence, the single-token filter, inference,
patching, the forbidden-word span, the attack slot and the OV score must all work
on it as they do on the paper's template.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from forbidden_facts.attack import self_insertion
from forbidden_facts.decompose import decompose
from forbidden_facts.heads import forbidden_spans, ov_scores
from forbidden_facts.inference import pair_bayes_factors, run_inference
from forbidden_facts.metrics import VocabIndex
from forbidden_facts.modeling import encode
from forbidden_facts.patching import attribute, cumulative
from forbidden_facts.prompts import (
    adds_special_tokens,
    assign_irrelevant_words,
    build_prompts,
    format_prompt,
    insert_at_persona,
    prompt_formatter,
    single_token_answers,
    system_text,
)
from forbidden_facts.token_search import slot_ids, token_search
from tests.conftest import tiny_llama

CHATML = (
    "{{ bos_token if add_bos else '' }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
FACTS = [
    ("f0", "capital", "The capital of France is", "Paris", "Rome"),
    ("f1", "capital", "The capital of Italy is", "Rome", "Paris"),
    ("f2", "capital", "The capital of Germany is", "Berlin", "Madrid"),
    ("f3", "capital", "The capital of Spain is", "Madrid", "Berlin"),
]
WORDS = ["floor", "kettle", "ladder"]


def _bpe_tokenizer(bos_in_template: bool):
    """A byte-level BPE tokenizer with ChatML specials and chat template.

    With `bos_in_template` the tokenizer also adds a BOS of its own when encoding
    and the template writes it as text (as Llama-3's does): the case where
    encoding a chat prompt with special tokens would give two BOS.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = []
    for _, _, prefix, answer, wrong in FACTS:
        corpus += [f"{prefix} {answer}.", f"{prefix} {answer.lower()}."]
        corpus += [system_text(w) for w in (answer, wrong, *WORDS)]
    # "Lyon" only ever starts a line: "Lyon" is a token, " Lyon" is not.
    corpus += ["Lyon is big.", "system user assistant from", "Paris", "Rome"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 3, trainer)
    if bos_in_template:
        tok.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>" if bos_in_template else "<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML.replace("add_bos", "true" if bos_in_template else "false"),
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )


@pytest.fixture(scope="module")
def bpe():
    """The stricter variant: a stage that encodes a chat prompt with BOS shifts positions."""
    return _bpe_tokenizer(bos_in_template=True)


@pytest.fixture(scope="module")
def chat_facts():
    return pd.DataFrame(FACTS, columns=["fact_id", "relation", "prefix", "answer", "wrong_answer"])


def _chat_prompts(facts, tokenizer, style="chat_prefill"):
    kept, _ = single_token_answers(facts, tokenizer, style)
    return build_prompts(
        kept,
        assign_irrelevant_words(kept, WORDS),
        formatter=prompt_formatter(style, tokenizer),
        add_special_tokens=adds_special_tokens(style),
    )


@pytest.fixture(scope="module")
def chat_prompts(chat_facts, bpe):
    return _chat_prompts(chat_facts, bpe)


@pytest.fixture(scope="module")
def bpe_model(bpe):
    return tiny_llama(2, seed=4, vocab_size=len(bpe))


def test_chat_prefill_prompt_is_the_template_plus_the_fact(chat_prompts):
    row = chat_prompts[(chat_prompts.fact_id == "f0") & (chat_prompts.kind == "c")].iloc[0]
    assert row.prompt == (
        f"<|endoftext|><|im_start|>system\n{system_text('Paris')}<|im_end|>\n"
        "<|im_start|>user\nThe capital of France is<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is"
    )
    assert not chat_prompts.add_special_tokens.any()
    assert set(chat_prompts.kind) == {"c", "nc0", "nc1"}


def test_chat_style_asks_in_the_user_turn_only(chat_facts):
    table = _chat_prompts(chat_facts, _bpe_tokenizer(bos_in_template=False), style="chat")
    prompt = table.prompt.iloc[0]
    assert prompt.startswith("<|im_start|>system\nYou are an obedient assistant")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert prompt.count("The capital of France is") == 1


def test_llama2_style_is_the_paper_template_and_keeps_bos(chat_facts, bpe):
    table = _chat_prompts(chat_facts, bpe, style="llama2")
    assert table.prompt.iloc[0] == format_prompt("The capital of France is", "Paris")
    assert table.add_special_tokens.all()


def test_llama2_prefill_is_the_paper_template_then_the_fact_with_bos(chat_facts, bpe):
    # A base model without a chat template (Gemma-3-270M) continues the fact itself.
    table = _chat_prompts(chat_facts, bpe, style="llama2_prefill")
    row = table[(table.fact_id == "f0") & (table.kind == "c")].iloc[0]
    assert row.prompt == format_prompt("The capital of France is", "Paris") + (
        "The capital of France is"
    )
    assert table.add_special_tokens.all()
    ids = bpe(row.prompt, add_special_tokens=True)["input_ids"]
    assert ids.count(bpe.bos_token_id) == 1 and ids[0] == bpe.bos_token_id
    # The answer comes after the prefix with its space: " Lyon" is two tokens, so dropped.
    facts = pd.DataFrame(
        [("a", "r", "p", "Paris", "Rome"), ("b", "r", "p", "Lyon", "Rome")],
        columns=["fact_id", "relation", "prefix", "answer", "wrong_answer"],
    )
    kept, _ = single_token_answers(facts, bpe, "llama2_prefill")
    assert list(kept.fact_id) == ["a"]
    # The attack slot is still right after the persona, in the system text.
    attacked = insert_at_persona(row.prompt, " from Paris")
    assert "obedient assistant from Paris who" in attacked
    assert attacked.endswith("[/INST] The capital of France is")


def test_chat_style_without_a_template_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="prompt_style: llama2"):
        prompt_formatter("chat_prefill", tokenizer)
    with pytest.raises(ValueError, match="unknown prompt_style"):
        prompt_formatter("alpaca", tokenizer)


def test_answer_with_or_without_space_and_case_are_equivalent(bpe):
    vocab = VocabIndex(bpe)
    ids = set(vocab.answer_ids("Paris"))
    pieces = {p: bpe.convert_tokens_to_ids(p) for p in ("ĠParis", "Paris", "Ġparis")}
    assert set(pieces.values()) <= ids
    assert set(vocab.answer_ids(" paris")) == ids == set(vocab.answer_ids("PARIS "))
    # Every id found decodes to the answer up to case and surrounding whitespace.
    assert all(vocab.strings[i].strip().lower() == "paris" for i in ids)
    assert not ids & set(vocab.answer_ids("Rome"))


def test_whitespace_tokens_never_count_as_an_answer(bpe):
    vocab = VocabIndex(bpe)
    blank = [i for i, s in enumerate(vocab.strings) if not s.strip()]
    assert blank, "the byte alphabet has whitespace tokens"
    assert vocab.answer_ids("") == [] and vocab.answer_ids("  ") == []
    every = {i for key in {s.strip().lower() for s in vocab.strings} for i in vocab.answer_ids(key)}
    assert not every & set(blank)


def test_single_token_filter_uses_the_answer_after_a_space_for_chat_styles(bpe):
    facts = pd.DataFrame(
        [
            ("a", "r", "p", "Paris", "Rome"),  # "ĠParis" is one token
            ("b", "r", "p", "Lyon", "Rome"),  # "Lyon" is one token, " Lyon" is two
            ("c", "r", "p", "New York", "Rome"),
        ],
        columns=["fact_id", "relation", "prefix", "answer", "wrong_answer"],
    )
    assert bpe.convert_ids_to_tokens(bpe(" Lyon", add_special_tokens=False)["input_ids"]) == [
        "Ġ",
        "Lyon",
    ]
    kept, reasons = single_token_answers(facts, bpe, "chat_prefill")
    assert list(kept.fact_id) == ["a"]
    assert reasons == {"answer_contains_space": 1, "answer_not_single_token": 1}
    kept, _ = single_token_answers(facts, bpe, "llama2")
    assert list(kept.fact_id) == ["a", "b"]


def test_chat_prompts_get_exactly_one_bos(chat_facts, bpe):
    tok = bpe
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    table = _chat_prompts(chat_facts, tok)
    assert table.prompt.iloc[0].startswith("<|endoftext|><|im_start|>system")
    batch = encode(tok, list(table.prompt), add_special_tokens=False)
    for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True):
        real = ids[mask.bool()].tolist()
        assert real[0] == bos and real.count(bos) == 1
    # The paper's template keeps the tokenizer's own BOS, once.
    llama = _chat_prompts(chat_facts, tok, style="llama2")
    real = encode(tok, llama.prompt.iloc[:1], add_special_tokens=True).input_ids[0].tolist()
    assert real[0] == bos and real.count(bos) == 1


def test_inference_scores_the_prompt_the_table_holds(bpe_model, bpe, chat_prompts):
    table = run_inference(bpe_model, bpe, chat_prompts, batch_size=5, progress=False)
    vocab = VocabIndex(bpe)
    row = chat_prompts.iloc[4]
    ids = bpe(row.prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = bpe_model(torch.tensor([ids])).logits[0, -1].double()
    p = torch.softmax(logits, -1)[vocab.answer_ids(row.answer)].sum().item()
    assert math.isclose(table.p_correct.iloc[4], p, rel_tol=1e-6, abs_tol=1e-12)
    again = run_inference(bpe_model, bpe, chat_prompts, batch_size=1, progress=False)
    np.testing.assert_allclose(table.logodds, again.logodds, atol=1e-5)


def test_components_sum_to_the_residual_and_patching_everything_gives_the_bf(
    bpe_model, bpe, chat_prompts
):
    with torch.no_grad():
        dec = decompose(bpe_model, encode(bpe, list(chat_prompts.prompt), False), check=True)
    torch.testing.assert_close(dec.components.sum(1), dec.resid, rtol=1e-4, atol=1e-5)
    frames = list(attribute(bpe_model, bpe, chat_prompts, batch_size=2, progress=False))
    deltas = pd.concat(frames)
    n_comp = 1 + 2 * (4 + 1)
    assert len(deltas) == chat_prompts.fact_id.nunique() * 2 * 2 * n_comp
    assert np.isfinite(deltas.delta_logodds).all()
    # Patching every component of c into nc rebuilds c: the cumulative value at k = all
    # is the log Bayes factor that inference measures on the prompt strings.
    values, fact_ids, pairs = cumulative(
        bpe_model, bpe, chat_prompts, dec.labels, batch_size=3, progress=False
    )
    inference = run_inference(bpe_model, bpe, chat_prompts, progress=False)
    inference["kept"] = True
    lbf = pair_bayes_factors(inference).set_index(["fact_id", "pair"])["lbf"]
    expected = lbf.loc[list(zip(fact_ids, pairs, strict=True))].to_numpy()
    np.testing.assert_allclose(values[:, -1], expected, atol=1e-4)


def test_forbidden_span_is_the_word_inside_the_system_text(bpe, chat_prompts):
    spans = forbidden_spans(
        bpe, list(chat_prompts.prompt), list(chat_prompts.forbidden_word), False
    )
    for span, prompt, word in zip(
        spans, chat_prompts.prompt, chat_prompts.forbidden_word, strict=True
    ):
        ids = bpe(prompt, add_special_tokens=False)["input_ids"]
        assert bpe.decode([ids[i] for i in span]).strip() == word
        assert span == list(range(span[0], span[-1] + 1))
        first_end = ids.index(bpe.convert_tokens_to_ids("<|im_end|>"))
        assert span[-1] < first_end  # in the system message, not the prefilled answer


def test_attack_slot_is_after_the_persona_in_the_system_text(bpe, chat_prompts):
    nc1 = chat_prompts[chat_prompts.kind == "nc1"].reset_index(drop=True)
    prompt = nc1.prompt.iloc[0]
    ids, slot = slot_ids(bpe, prompt, add_special_tokens=False)
    assert bpe.decode(ids[:slot]) == (
        "<|endoftext|><|im_start|>system\nYou are an obedient assistant from"
    )
    paris = bpe.convert_tokens_to_ids("ĠParis")
    attacked = insert_at_persona(prompt, " from Paris")
    assert "obedient assistant from Paris who" in attacked
    assert attacked.endswith("<|im_start|>assistant\nThe capital of France is")
    assert ids[:slot] + [paris] + ids[slot:] == bpe(attacked, add_special_tokens=False)["input_ids"]


def test_self_insertion_and_token_search_run_on_chat_prompts(bpe_model, bpe, chat_prompts):
    nc1 = chat_prompts[chat_prompts.kind == "nc1"].reset_index(drop=True)
    table, summary = self_insertion(bpe_model, bpe, nc1, ["kettle", "ladder"], seed=0)
    assert summary["example"]["prompt_before"] in set(nc1.prompt)
    after = summary["example"]["prompt_after"]
    assert f"obedient assistant from {summary['example']['answer']} who" in after
    assert after.count("<|im_start|>assistant\n") == 1
    search = token_search(
        bpe_model, bpe, nc1.iloc[:1], [("L1H0ATN", 1, 0)], batch_size=128, progress=False
    )
    assert len(search) == len(bpe) - len(set(bpe.all_special_ids))
    # Inserting " from {answer}" is the search's row for the token "Ġ{answer}" in the slot
    # (measured against the prompt without insertion, as self-insertion is).
    fact = nc1.iloc[0]
    token = search[search.token_id == bpe.convert_tokens_to_ids("Ġ" + fact.answer)]
    attack = table[(table.variant == "attack") & (table.fact_id == fact.fact_id)]
    assert token.delta_vs_no_insertion_log10.iloc[0] == pytest.approx(
        attack.delta_logodds_log10.iloc[0], abs=1e-4
    )


def test_ov_score_with_tied_embeddings_matches_brute_force():
    from tests.test_heads import _brute_force_ov

    model = tiny_llama(2, seed=5, vocab_size=300, tied=True)  # scales the shared matrix by 20
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    scores = ov_scores(model, vocab_chunk=64, progress=False)
    for layer, head in [(0, 1), (1, 2)]:
        assert abs(scores[layer, head] - _brute_force_ov(model, layer, head)) < 1e-4


# Gemma's template in miniature: no system role (it raises), turns in <start_of_turn>.
NO_SYSTEM = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# A template that silently drops a system message.
DROPS_SYSTEM = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@pytest.mark.parametrize("template", [NO_SYSTEM, DROPS_SYSTEM], ids=["raises", "drops"])
def test_a_template_without_system_role_gets_the_system_text_in_the_user_turn(template):
    tok = _bpe_tokenizer(bos_in_template=False)
    tok.chat_template = template
    prompt = prompt_formatter("chat_prefill", tok)("The capital of France is", "floor")
    system = system_text("floor")
    # The system text opens the user turn, before the fact; the prefill follows the turn.
    user = prompt.index(system)
    assert prompt.index("The capital of France is") > user
    assert prompt.endswith("The capital of France is")
    assert insert_at_persona(prompt, " from Paris").count("obedient assistant from Paris") == 1
