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
from jaxtyping import Float, Int
from torch import Tensor

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


def _score(model, tokenizer, texts, answers, vocab, batch_size, specials=True, spans=None):
    """The answer's log-odds, probability, top-1 token and top 5 at the end of each text.

    With `spans` (one (start, end) character range per text), the same passes also give
    every head's attention from the last position summed over the tokens that cover
    the range, [text, layer * head] (the model must run eager attention); else None.
    """
    from .heads import last_position_outputs

    lo, p, top1, topk, attention = [], [], [], [], []
    for sl in chunks(len(texts), batch_size):
        batch = encode(tokenizer, texts[sl], specials)
        if spans is None:
            logits = final_logits(model, batch).float()
        else:
            logits, attn, pad = last_position_outputs(model, batch)
            logits = logits.float()
            attention.append(_span_attention(tokenizer, texts[sl], spans[sl], specials, attn, pad))
        mask = vocab.answer_mask(answers[sl], logits.shape[-1])
        lo += answer_logodds(logits, mask).cpu().tolist()
        p += answer_prob(logits, mask).cpu().tolist()
        probs = torch.softmax(logits.double(), -1)
        val, idx = probs.topk(5, dim=-1)
        for v_row, i_row in zip(val.cpu().tolist(), idx.cpu().tolist(), strict=True):
            top1.append(i_row[0])
            topk.append([(vocab.strings[i], v) for i, v in zip(i_row, v_row, strict=True)])
    if spans is None:
        heads_attention = None
    else:
        heads_attention = np.concatenate(attention) if attention else np.zeros((0, 0))
    return np.array(lo), np.array(p), top1, topk, heads_attention


def _span_attention(
    tokenizer,
    texts: list[str],
    spans: list[tuple[int, int]],
    specials: bool,
    attn: Float[Tensor, "batch layer head pos"],
    pad: Int[Tensor, " batch"],
) -> np.ndarray:
    """Each text's attention summed over the tokens covering its character span, [text, L*H].

    The tokens are found by character offsets, so it does not matter how the tokenizer
    splits the word."""
    out = np.zeros((len(texts), attn.shape[1] * attn.shape[2]))
    for row, (text, (start, end)) in enumerate(zip(texts, spans, strict=True)):
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=specials)
        span = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > start and a < end]
        if not span:
            raise ValueError(f"no token covers the inserted word in {text[:80]!r}...")
        idx = torch.tensor(span) + int(pad[row])
        out[row] = attn[row][:, :, idx].sum(-1).reshape(-1).numpy()
    return out


def self_insertion(
    model,
    tokenizer,
    nc1: pd.DataFrame,
    control_pool: list[str],
    seed: int = 0,
    batch_size: int = 32,
    vocab: VocabIndex | None = None,
    attention: bool = False,
) -> tuple[pd.DataFrame, dict] | tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Self-insertion attack and its control on the nc1 prompts of the kept facts.

    Args:
        nc1: One row per kept fact: ``fact_id``, ``prefix``, ``answer``, ``forbidden_word``,
            ``prompt`` (the nc1 prompt, in the model's prompt style).
        control_pool: Unrelated words for the control insertion.
        attention: Also return every head's attention from the last position onto the
            inserted word, from the same forward passes (the model must be loaded with
            attn_implementation="eager").

    Returns:
        (table, summary): the per-fact table and the attack summary; with `attention`,
        (table, summary, attention): columns `ATTACK_ATTENTION_COLUMNS`, one row per
        (fact, variant, head) in the table's order, the attention summed over the
        inserted word's tokens.
    """
    vocab = vocab or VocabIndex(tokenizer)
    nc1 = nc1.reset_index(drop=True)
    fact_ids, answers = list(nc1["fact_id"]), list(nc1["answer"])
    base = list(nc1["prompt"])
    specials = encoding_flag(nc1)
    lo0, p0, top0, topk0, _ = _score(model, tokenizer, base, answers, vocab, batch_size, specials)
    controls = control_words(fact_ids, list(nc1["forbidden_word"]), control_pool, seed)
    rows, examples, heads_attention = [], {}, []
    summary: dict = {S.attack_n_facts: len(nc1), S.slot: f"after '{PERSONA_ANCHOR}'"}
    for variant, inserted in (("attack", answers), ("control", controls)):
        texts = [
            insert_at_persona(t, f" from {ins}") for t, ins in zip(base, inserted, strict=True)
        ]
        # The inserted word's characters, for its attention.
        starts = [persona_end(t) + len(" from ") for t in base]
        spans = [(a, a + len(ins)) for a, ins in zip(starts, inserted, strict=True)]
        lo1, p1, top1, topk1, seen = _score(
            model,
            tokenizer,
            texts,
            answers,
            vocab,
            batch_size,
            specials,
            spans if attention else None,
        )
        if attention:
            heads_attention.append(seen)
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
    if not attention:
        return table, summary
    return table, summary, _attention_table(model, table, np.concatenate(heads_attention))


def _attention_table(model, table: pd.DataFrame, values: np.ndarray) -> pd.DataFrame:
    """One row per (row of `table`, head): `values` is [len(table), layer * head]."""
    from .artifacts import ATTACK_ATTENTION_COLUMNS
    from .decompose import model_shape

    n_layers, n_heads, _ = model_shape(model)
    labels = [f"L{i}H{h}ATN" for i in range(n_layers) for h in range(n_heads)]
    out = pd.DataFrame(
        {
            "fact_id": np.repeat(table["fact_id"].to_numpy(), len(labels)),
            "variant": np.repeat(table["variant"].to_numpy(), len(labels)),
            "component": np.tile(np.asarray(labels, dtype=object), len(table)),
            "attention": values.reshape(-1),
        }
    )
    return out[list(ATTACK_ATTENTION_COLUMNS)]
