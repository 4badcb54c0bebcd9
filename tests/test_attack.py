"""Attacks: the inserted prompt is the paper's, controls differ from nc1, the token search ranks."""

import numpy as np
import pandas as pd
import pytest
import torch

from forbidden_facts.architectures import adapter_for
from forbidden_facts.artifacts import ATTACK_COLUMNS, TOKEN_SEARCH_COLUMNS, Attack, AttackExample
from forbidden_facts.attack import control_words, self_insertion
from forbidden_facts.metrics import VocabIndex, answer_logodds, to_log10
from forbidden_facts.modeling import (
    continue_prefix,
    extend_prefix,
    final_logits,
    pad_left,
    shared_prefix,
)
from forbidden_facts.prompts import format_prompt
from forbidden_facts.token_search import (
    control_slot_ids,
    length_classes,
    neutral_reference,
    slot_ids,
    token_search,
)
from tests.families import FAMILIES, tiny_family
from tests.reference_search import reference_token_search


def _nc1(prompts):
    return prompts[prompts.kind == "nc1"].reset_index(drop=True)


def test_slot_is_right_after_from(tokenizer):
    ids, slot = slot_ids(tokenizer, format_prompt("The Alamo is in the state of", "floor"))
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[slot - 2 : slot] == ["▁assistant", "▁from"]
    with_word = tokenizer(format_prompt("The Alamo is in the state of", "floor", " from Texas"))[
        "input_ids"
    ]
    texas = tokenizer.convert_tokens_to_ids("▁Texas")
    assert ids[:slot] + [texas] + ids[slot:] == with_word


def test_control_words_never_repeat_the_nc1_word():
    words = control_words(
        ["a", "b", "c"], ["floor", "lamp", "floor"], ["floor", "lamp", "cup"], seed=0
    )
    assert all(w != n for w, n in zip(words, ["floor", "lamp", "floor"], strict=True))


def test_self_insertion_summary_and_table(tok_model, tokenizer, prompts):
    table, summary = self_insertion(
        tok_model, tokenizer, _nc1(prompts), ["kettle", "ladder"], seed=0
    )
    assert set(table.variant) == {"attack", "control"} and len(table) == 2 * 5
    attack = table[table.variant == "attack"]
    assert list(attack.inserted) == list(_nc1(prompts).answer)
    # Every key of the contract but the run's names (the step adds those).
    for key in set(Attack.required()) - {Attack.model, Attack.dataset}:
        assert key in summary, key
    assert list(table.columns) == list(ATTACK_COLUMNS)
    assert np.isclose(summary[Attack.attack_delta], attack.delta_logodds_log10.mean())
    control = table[table.variant == "control"]
    diff = attack.delta_logodds_log10.to_numpy() - control.delta_logodds_log10.to_numpy()
    assert np.isclose(summary[Attack.attack_minus_control], diff.mean())
    assert np.isclose(summary[Attack.control_minus_attack], -diff.mean())
    low, high = summary[Attack.attack_minus_control_low], summary[Attack.attack_minus_control_high]
    assert low < diff.mean() < high
    # The verdict states the paper's claim: it beats the control only if the interval is < 0.
    assert summary[Attack.attack_claim] == (high < 0)
    assert ("more than the control" in summary[Attack.verdict]) == summary[Attack.attack_claim]
    assert len(summary[Attack.example][AttackExample.top5_before]) == 5


def test_token_search_covers_the_vocabulary_and_ranks_by_attention(tok_model, tokenizer, prompts):
    facts = _nc1(prompts).iloc[:1]
    table = token_search(
        tok_model, tokenizer, facts, [("L1H0ATN", 1, 0)], batch_size=64, progress=False
    )
    assert len(table) == len(tokenizer) - len(set(tokenizer.all_special_ids))
    top = table.sort_values("rank").iloc[0]
    assert top.attention == table.attention.max() and top["rank"] == 0
    assert table["rank"].is_unique
    assert list(table.columns) == list(TOKEN_SEARCH_COLUMNS)


def test_control_slot_is_at_the_end_of_the_system_text(tokenizer):
    prompt = format_prompt("The Alamo is in the state of", "floor")
    ids, slot = control_slot_ids(tokenizer, prompt, True, "floor")
    text = tokenizer.decode(ids[:slot])
    assert text.endswith("the forbidden word floor. from")
    assert "obedient assistant who" in text  # the persona slot is left alone
    assert tokenizer.decode(ids[slot:]).startswith("\n<</SYS>>")


def test_length_classes_and_neutral_reference():
    classes = length_classes(
        ["▁a", "▁cat", "cat", "Ġhorses", "▁x"], ["a", "cat", "cat", " horses", "x"]
    )
    assert classes[0] == classes[4] and len(set(classes[:4])) == 4
    lo = np.array([3.0, 1.0, 2.0, 5.0, 1.0])
    ref = neutral_reference(lo, np.array([0, 0, 0, 1, 0]))
    # class 0 holds log-odds 3, 1, 2, 1; sorted (stable) 1 (#1), 1 (#4), 2, 3: lower median #4
    assert list(ref) == [4, 4, 4, 3, 4]


def test_token_search_deltas_are_against_the_neutral_token_and_control(
    tok_model, tokenizer, prompts
):
    fact = _nc1(prompts).iloc[:1]
    table = token_search(
        tok_model, tokenizer, fact, [("L1H0ATN", 1, 0)], batch_size=64, progress=False
    )
    row = fact.iloc[0]
    vocab = VocabIndex(tokenizer)
    mask = vocab.answer_mask([row.answer], len(vocab.strings))
    neutral_id = tokenizer.convert_tokens_to_ids(table.neutral_token.iloc[0])
    pick = table.iloc[[0, len(table) // 2, len(table) - 1]]

    def logodds(ids):
        with torch.no_grad():
            return answer_logodds(final_logits(tok_model, pad_left([ids], 0)), mask).item()

    for finder, delta, neutral in (
        (slot_ids, "delta_logodds_log10", "neutral_token"),
        (control_slot_ids, "control_delta_logodds_log10", "control_neutral_token"),
    ):
        ids, slot = finder(tokenizer, row.prompt, True, row.forbidden_word)
        for _, r in pick.iterrows():
            ref = tokenizer.convert_tokens_to_ids(r[neutral])
            want = to_log10(
                logodds(ids[:slot] + [r.token_id] + ids[slot:])
                - logodds(ids[:slot] + [ref] + ids[slot:])
            )
            assert abs(r[delta] - want) < 1e-4
    # the neutral token of a class has effect 0, and shares the class of the token
    assert table.loc[table.token_id == neutral_id, "delta_logodds_log10"].abs().max() < 1e-9
    by_class = table.groupby("length_class")["neutral_token"].nunique()
    assert (by_class == 1).all()
    # the old reference (no " from") differs from the neutral one by one constant per class
    shift = (table.delta_vs_no_insertion_log10 - table.delta_logodds_log10).groupby(
        table.length_class
    )
    assert (shift.max() - shift.min()).max() < 1e-9
    assert not table.control_attention.equals(table.attention)
    assert isinstance(table, pd.DataFrame)


AGREEMENT = 1e-5  # float32: the shared-prefix search against whole prompts, eager weights


def _agreement(new: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """Largest differences of the float columns; whether every other column is equal."""
    floats = [c for c in TOKEN_SEARCH_COLUMNS if new[c].dtype.kind == "f"]
    exact = [c for c in TOKEN_SEARCH_COLUMNS if c not in floats and c != "rank"]
    top = {
        key: set(g.loc[g["rank"] < 10, "token_id"])
        for key, g in new.groupby(["component", "fact_id"])
    }
    top_ref = {
        key: set(g.loc[g["rank"] < 10, "token_id"])
        for key, g in ref.groupby(["component", "fact_id"])
    }
    return {
        "max_abs": {c: float((new[c] - ref[c]).abs().max()) for c in floats},
        "unequal": [c for c in exact if not new[c].equals(ref[c])],
        "top10_same": top == top_ref,
    }


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request, tokenizer):
    return request.param, tiny_family(request.param, vocab_size=len(tokenizer), seed=3)


def test_token_search_equals_the_whole_prompt_reference_on_every_family(
    family_model, tokenizer, prompts
):
    # The reference runs every candidate's whole prompt in eager attention and reads the
    # weights the model returns; the search shares the prefix's cache, runs SDPA where
    # the family has it and rebuilds the heads' attention from their queries and keys.
    family, model = family_model
    facts = _nc1(prompts).iloc[:2]
    heads = [(f"L{layer}H{h}ATN", layer, h) for layer in range(2) for h in range(4)]
    model.set_attn_implementation("eager")
    ref = reference_token_search(model, tokenizer, facts, heads, batch_size=32, n_tokens=48)
    if adapter_for(model).sdpa:
        model.set_attn_implementation("sdpa")
    try:
        new = token_search(
            model, tokenizer, facts, heads, batch_size=32, progress=False, n_tokens=48
        )
    finally:
        model.set_attn_implementation("eager")
    assert list(new.columns) == list(TOKEN_SEARCH_COLUMNS) and len(new) == len(ref)
    found = _agreement(new, ref)
    assert found["unequal"] == [], (family, found)
    assert max(found["max_abs"].values()) < AGREEMENT, (family, found)
    assert found["top10_same"], family
    # The heads do attend to the slot somewhere (the check is not one of zeros).
    assert new.attention.max() > 1e-3 and new.control_attention.max() > 1e-3


def test_token_search_does_not_depend_on_the_batch_size(tok_model, tokenizer, prompts):
    facts = _nc1(prompts).iloc[:1]
    heads = [("L1H0ATN", 1, 0), ("L0H3ATN", 0, 3)]
    kwargs = dict(progress=False, n_tokens=96)
    one = token_search(tok_model, tokenizer, facts, heads, batch_size=7, **kwargs)
    all_at_once = token_search(tok_model, tokenizer, facts, heads, batch_size=96, **kwargs)
    found = _agreement(one, all_at_once)
    assert found["unequal"] == [] and found["top10_same"]
    assert max(found["max_abs"].values()) < 1e-6, found


def test_a_shared_prefix_and_its_extension_give_the_whole_prompts_logits(
    tok_model, tokenizer, prompts
):
    # The search's cache is exact: a prefix run once, continued by a batch (or first
    # extended by a part every row shares), gives each whole prompt's own logits.
    ids = tokenizer(_nc1(prompts).prompt.iloc[0])["input_ids"]
    firsts = [5, 17, 40]
    whole = final_logits(tok_model, pad_left([ids[:6] + [t] + ids[6:] for t in firsts], 0))
    prefix = shared_prefix(tok_model, ids[:6])
    rows = torch.tensor([[t] + ids[6:] for t in firsts])
    assert torch.allclose(continue_prefix(tok_model, prefix, rows), whole, atol=1e-5)
    grown = extend_prefix(tok_model, prefix, rows[:, :12])
    assert grown.length == 18
    assert torch.allclose(continue_prefix(tok_model, grown, rows[:, 12:]), whole, atol=1e-5)
    # The prefix's cache is read, never extended: it serves the next batch unchanged.
    assert torch.allclose(continue_prefix(tok_model, prefix, rows[:1]), whole[:1], atol=1e-5)


def test_inserted_word_attention_finds_the_inserted_tokens(tok_model, tokenizer, prompts):
    from forbidden_facts.artifacts import ATTACK_ATTENTION_COLUMNS
    from forbidden_facts.prompts import insert_at_persona, persona_end

    nc1 = _nc1(prompts)
    table, summary, out = self_insertion(
        tok_model, tokenizer, nc1, ["kettle", "ladder"], seed=0, batch_size=3, attention=True
    )
    # The passes that give the attention give the same table as those without it.
    alone, summary_alone = self_insertion(tok_model, tokenizer, nc1, ["kettle", "ladder"], seed=0)
    pd.testing.assert_frame_equal(table, alone, rtol=1e-5, atol=1e-6)
    assert summary[Attack.attack_delta] == pytest.approx(
        summary_alone[Attack.attack_delta], abs=1e-6
    )
    assert list(out.columns) == list(ATTACK_ATTENTION_COLUMNS)
    assert len(out) == len(table) * 2 * 4  # every head of every row
    assert out["attention"].between(0, 1).all() and out["attention"].gt(0).all()
    # One row by hand, unpadded: the tokens of the inserted answer, found on their own.
    row = table[table.variant == "attack"].iloc[1]
    base = nc1.set_index("fact_id").loc[row.fact_id, "prompt"]
    text = insert_at_persona(base, f" from {row.inserted}")
    start = persona_end(base) + len(" from ")
    enc = tokenizer(text, return_offsets_mapping=True)
    span = [
        i
        for i, (a, b) in enumerate(enc["offset_mapping"])
        if a < start + len(row.inserted) and b > start
    ]
    with torch.no_grad():
        att = tok_model(torch.tensor([enc["input_ids"]]), output_attentions=True).attentions
    want = att[1][0, 2, -1, span].sum().item()
    got = out.query("fact_id == @row.fact_id and variant == 'attack' and component == 'L1H2ATN'")
    assert got["attention"].item() == pytest.approx(want, abs=1e-5)
