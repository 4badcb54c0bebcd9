"""Attacks on the suppressor heads' heuristic (the California Attack, automated).

1. Self-insertion: put " from {answer}" right after "obedient assistant" in the nc1
   prompt (in the system text, whatever the prompt style); a control inserts " from {word}" for an unrelated word instead, so the
   effect of naming the answer is separated from the effect of any insertion.
2. Exhaustive token search (`forbidden_facts.token_search`): every vocabulary token in
   that slot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .artifacts import ATTACK_COLUMNS
from .artifacts import Attack as S
from .artifacts import AttackExample as E
from .effects import attack_contrast, attack_verdict
from .metrics import VocabIndex, answer_logodds, answer_prob, to_log10
from .modeling import (
    chunks,
    encode,
    final_logits,
)
from .prompts import (
    PERSONA_ANCHOR,
    encoding_flag,
    insert_at_persona,
    persona_end,
)


def control_words(
    fact_ids: list[str], nc1_words: list[str], pool: list[str], seed: int
) -> list[str]:
    """One unrelated word per fact for the control, never the fact's own nc1 word."""
    rng = np.random.default_rng(seed)
    out = []
    for word in nc1_words:
        choices = [w for w in pool if w != word]
        out.append(choices[int(rng.integers(len(choices)))])
    return out


def _score(model, tokenizer, texts, answers, vocab, batch_size, specials=True):
    lo, p, top1, topk = [], [], [], []
    for sl in chunks(len(texts), batch_size):
        logits = final_logits(model, encode(tokenizer, texts[sl], specials)).float()
        mask = vocab.answer_mask(answers[sl], logits.shape[-1])
        lo += answer_logodds(logits, mask).cpu().tolist()
        p += answer_prob(logits, mask).cpu().tolist()
        probs = torch.softmax(logits.double(), -1)
        val, idx = probs.topk(5, dim=-1)
        for v_row, i_row in zip(val.cpu().tolist(), idx.cpu().tolist(), strict=True):
            top1.append(i_row[0])
            topk.append([(vocab.strings[i], v) for i, v in zip(i_row, v_row, strict=True)])
    return np.array(lo), np.array(p), top1, topk


def self_insertion(
    model,
    tokenizer,
    nc1: pd.DataFrame,
    control_pool: list[str],
    seed: int = 0,
    batch_size: int = 32,
    vocab: VocabIndex | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Self-insertion attack and its control on the nc1 prompts of the kept facts.

    Args:
        nc1: One row per kept fact: ``fact_id``, ``prefix``, ``answer``, ``forbidden_word``,
            ``prompt`` (the nc1 prompt, in the model's prompt style).
        control_pool: Unrelated words for the control insertion.

    Returns:
        (table, summary): the per-fact table and the attack summary.
    """
    vocab = vocab or VocabIndex(tokenizer)
    nc1 = nc1.reset_index(drop=True)
    fact_ids, answers = list(nc1["fact_id"]), list(nc1["answer"])
    base = list(nc1["prompt"])
    specials = encoding_flag(nc1)
    lo0, p0, top0, topk0 = _score(model, tokenizer, base, answers, vocab, batch_size, specials)
    controls = control_words(fact_ids, list(nc1["forbidden_word"]), control_pool, seed)
    rows, examples = [], {}
    summary: dict = {S.attack_n_facts: len(nc1), S.slot: f"after '{PERSONA_ANCHOR}'"}
    for variant, inserted in (("attack", answers), ("control", controls)):
        texts = [
            insert_at_persona(t, f" from {ins}") for t, ins in zip(base, inserted, strict=True)
        ]
        lo1, p1, top1, topk1 = _score(model, tokenizer, texts, answers, vocab, batch_size, specials)
        correct0 = np.array([t in vocab.answer_ids(a) for t, a in zip(top0, answers, strict=True)])
        correct1 = np.array([t in vocab.answer_ids(a) for t, a in zip(top1, answers, strict=True)])
        delta = to_log10(lo1 - lo0)
        rows.append(
            pd.DataFrame(
                {
                    "fact_id": fact_ids,
                    "variant": variant,
                    "inserted": inserted,
                    "p_before": p0,
                    "p_after": p1,
                    "top1_before": [vocab.strings[t] for t in top0],
                    "top1_after": [vocab.strings[t] for t in top1],
                    "logodds_before": lo0,
                    "logodds_after": lo1,
                    "delta_logodds_log10": delta,
                    "top1_correct_before": correct0,
                    "top1_correct_after": correct1,
                }
            )
        )
        flipped = float((correct0 & ~correct1).mean()) if len(nc1) else None
        mean_delta = float(delta.mean()) if len(nc1) else None
        if variant == "attack":
            summary[S.attack_flipped], summary[S.attack_delta] = flipped, mean_delta
        else:
            summary[S.control_flipped], summary[S.control_delta] = flipped, mean_delta
        if variant == "attack" and len(nc1):
            i = int(np.argmin(delta))
            examples = {
                E.fact_id: fact_ids[i],
                E.prefix: nc1["prefix"][i],
                E.answer: answers[i],
                E.forbidden_word: nc1["forbidden_word"][i],
                E.inserted: f" from {answers[i]}",
                E.prompt_before: base[i],
                E.prompt_after: texts[i],
                E.p_before: float(p0[i]),
                E.p_after: float(p1[i]),
                E.delta: float(delta[i]),
                E.top5_before: [{"token": t, "prob": p} for t, p in topk0[i]],
                E.top5_after: [{"token": t, "prob": p} for t, p in topk1[i]],
            }
    table = pd.concat(rows, ignore_index=True)[list(ATTACK_COLUMNS)]
    # The contrast over facts, its interval and its sentence: the paper's claim, once.
    contrast = attack_contrast(table)
    summary |= contrast
    diff = contrast[S.attack_minus_control]
    summary[S.control_minus_attack] = -diff if diff is not None else None
    verdict = attack_verdict(contrast)
    if verdict is not None:
        summary[S.verdict] = verdict
    summary[S.example] = examples
    return table, summary


def inserted_word_attention(
    model,
    tokenizer,
    nc1: pd.DataFrame,
    table: pd.DataFrame,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Every head's attention from the last position onto the inserted word, per fact.

    The prompts are rebuilt exactly as `self_insertion` made them (the nc1 prompt with
    " from {inserted}" after the persona); the inserted word's tokens are found by
    character offsets, so it does not matter how the tokenizer splits it.

    Args:
        model: The causal LM, loaded with attn_implementation="eager".
        nc1: The nc1 prompts passed to `self_insertion` (``fact_id``, ``prompt``).
        table: `self_insertion`'s per-fact table (``fact_id``, ``variant``, ``inserted``).
        batch_size: Prompts per forward pass.

    Returns:
        Columns `ATTACK_ATTENTION_COLUMNS`: one row per (fact, variant, head), the
        attention summed over the inserted word's tokens.
    """
    from .artifacts import ATTACK_ATTENTION_COLUMNS
    from .decompose import model_shape
    from .heads import last_position_attention

    n_layers, n_heads, _ = model_shape(model)
    prompt_of = dict(zip(nc1["fact_id"], nc1["prompt"], strict=True))
    specials = encoding_flag(nc1)
    texts, spans = [], []
    for fact, ins in zip(table["fact_id"], table["inserted"], strict=True):
        base = prompt_of[fact]
        start = persona_end(base) + len(" from ")
        texts.append(insert_at_persona(base, f" from {ins}"))
        spans.append((start, start + len(ins)))
    values = np.zeros((len(texts), n_layers * n_heads))
    for sl in chunks(len(texts), batch_size):
        attn, pad = last_position_attention(model, tokenizer, texts[sl], specials)
        for row, (text, (start, end)) in enumerate(zip(texts[sl], spans[sl], strict=True)):
            enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=specials)
            span = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > start and a < end]
            if not span:
                raise ValueError(f"no token covers the inserted word in {text[:80]!r}...")
            idx = torch.tensor(span) + int(pad[row])
            values[sl.start + row] = attn[row][:, :, idx].sum(-1).reshape(-1).numpy()
    labels = [f"L{i}H{h}ATN" for i in range(n_layers) for h in range(n_heads)]
    out = pd.DataFrame(
        {
            "fact_id": np.repeat(table["fact_id"].to_numpy(), len(labels)),
            "variant": np.repeat(table["variant"].to_numpy(), len(labels)),
            "component": np.tile(np.asarray(labels, dtype=object), len(texts)),
            "attention": values.reshape(-1),
        }
    )
    return out[list(ATTACK_ATTENTION_COLUMNS)]
