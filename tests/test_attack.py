"""Attacks: the inserted prompt is the paper's, controls differ from nc1, the token search ranks."""

import numpy as np

from forbidden_facts.attack import control_words, self_insertion, slot_ids, token_search
from forbidden_facts.prompts import format_prompt


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
    for key in (
        "n_facts",
        "frac_top1_flipped",
        "mean_delta_logodds_log10",
        "control_frac_top1_flipped",
        "control_mean_delta_logodds_log10",
        "example",
        "verdict",
    ):
        assert key in summary
    assert np.isclose(summary["mean_delta_logodds_log10"], attack.delta_logodds_log10.mean())
    assert len(summary["example"]["top5_before"]) == 5


def test_token_search_covers_the_vocabulary_and_ranks_by_attention(tok_model, tokenizer, prompts):
    facts = _nc1(prompts).iloc[:1]
    table = token_search(
        tok_model, tokenizer, facts, [("L1H0ATN", 1, 0)], batch_size=64, progress=False
    )
    assert len(table) == len(tokenizer) - len(set(tokenizer.all_special_ids))
    top = table.sort_values("rank").iloc[0]
    assert top.attention == table.attention.max() and top["rank"] == 0
    assert table["rank"].is_unique
