"""Inference: p_correct, log-odds and the top-1 token of every prompt.

One batched forward pass per chunk of prompts; only the final position's logits
are kept. The kept filter (the model knows the fact) and the total effect of
forbidding the answer follow docs/science.md § Metric.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .artifacts import Card
from .artifacts import Inference as S
from .metrics import VocabIndex, answer_logodds, answer_prob, to_log10
from .modeling import chunks, encode, final_logits
from .prompts import encoding_flag

log = logging.getLogger(__name__)


class NonFiniteLogitsError(RuntimeError):
    """NaN or inf logits: usually float16 overflow or broken weights."""


def check_finite(logits: torch.Tensor, fact_ids, where: str) -> None:
    """Raise naming the fact ids whose logits are NaN or inf."""
    bad = ~torch.isfinite(logits).all(dim=-1)
    if bad.any():
        ids = [fact_ids[i] for i in torch.nonzero(bad).flatten().tolist()]
        raise NonFiniteLogitsError(
            f"{where}: NaN or inf logits for fact_id(s) {ids[:10]}. In float16 this is usually "
            "an overflow: set `dtype: bfloat16` or `float32` for this model in config/config.yaml."
        )


def run_inference(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    batch_size: int = 32,
    vocab: VocabIndex | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every prompt: p_correct, natural log-odds, the top-1 token and its probability.

    Args:
        model: A causal LM in eval mode.
        tokenizer: Its tokenizer.
        prompts: Table with ``fact_id``, ``kind``, ``answer``, ``prompt``.
        batch_size: Prompts per forward pass; results do not depend on it.
        vocab: A prebuilt VocabIndex (decoding the vocabulary once is not free).
        progress: Show a progress bar over batches.

    Returns:
        ``fact_id``, ``kind``, ``p_correct``, ``logodds``, ``top1_token``, ``top1_prob``
        and ``kept`` (min(p_nc0, p_nc1) > 0.5, the same for the fact's three rows).
    """
    vocab = vocab or VocabIndex(tokenizer)
    specials = encoding_flag(prompts)
    out = {"p_correct": [], "logodds": [], "top1_token": [], "top1_prob": []}
    n = len(prompts)
    for sl in tqdm(list(chunks(n, batch_size)), desc="inference", disable=not progress):
        part = prompts.iloc[sl]
        logits = final_logits(model, encode(tokenizer, list(part["prompt"]), specials)).float()
        check_finite(logits, list(part["fact_id"]), "inference")
        mask = vocab.answer_mask(list(part["answer"]), logits.shape[-1])
        out["p_correct"] += answer_prob(logits, mask).cpu().tolist()
        out["logodds"] += answer_logodds(logits, mask).cpu().tolist()
        probs = torch.softmax(logits.double(), dim=-1)
        top_p, top_i = probs.max(dim=-1)
        out["top1_token"] += [vocab.strings[i] for i in top_i.cpu().tolist()]
        out["top1_prob"] += top_p.cpu().tolist()
    table = prompts[["fact_id", "kind"]].reset_index(drop=True).copy()
    for key, values in out.items():
        table[key] = values
    return add_kept(table)


def add_kept(table: pd.DataFrame) -> pd.DataFrame:
    """Mark facts whose nc prompts both give the answer more than half the mass."""
    wide = table.pivot(index="fact_id", columns="kind", values="p_correct")
    kept = (np.minimum(wide["nc0"], wide["nc1"]) > 0.5).rename("kept")
    return table.drop(columns=["kept"], errors="ignore").merge(
        kept, left_on="fact_id", right_index=True
    )


def pair_bayes_factors(table: pd.DataFrame) -> pd.DataFrame:
    """Per kept fact and pair j: lbf_j = lo(c) - lo(nc_j) in natural log."""
    kept = table[table["kept"]]
    if kept.empty:  # e.g. a relation none of whose facts the model knows
        return pd.DataFrame({"fact_id": pd.Series(dtype=str), "pair": [], "lbf": []})
    wide = kept.pivot(index="fact_id", columns="kind", values="logodds")
    rows = []
    for pair in ("nc0", "nc1"):
        rows.append(
            pd.DataFrame({"fact_id": wide.index, "pair": pair, "lbf": wide["c"] - wide[pair]})
        )
    return pd.concat(rows, ignore_index=True)


def total_effect(table: pd.DataFrame) -> dict:
    """Total effect of forbidding the answer: mean and std of -lbf over kept pairs, log10."""
    lbf = pair_bayes_factors(table)
    effect = -to_log10(lbf["lbf"].to_numpy())
    n_facts = int(table["fact_id"].nunique())
    n_kept = int(table.loc[table["kept"], "fact_id"].nunique())
    return {
        S.n_facts: n_facts,
        S.n_kept: n_kept,
        S.frac_known: n_kept / n_facts if n_facts else float("nan"),
        S.total_effect: float(effect.mean()) if len(effect) else float("nan"),
        S.total_effect_std: float(effect.std(ddof=1)) if len(effect) > 1 else float("nan"),
    }


def never_forbidden_effect(table: pd.DataFrame, prompts: pd.DataFrame, record: dict) -> dict:
    """Recall and total effect on the facts whose answer was never a forbidden target in training.

    Only these measure a general suppression mechanism: an answer the organism was
    taught to withhold could be suppressed by a memorised rule for that word.

    Args:
        table: inference.parquet of the card's dataset.
        prompts: prompts.parquet of the same run (the facts' answers).
        record: The organism's training record (`toy.read_training_record`).

    Returns:
        The never-forbidden keys of `forbidden_facts.artifacts.Card`; empty for a
        record older than its ``forbidden_targets`` list (unknown, not "none").
    """
    if "forbidden_targets" not in record:
        return {}
    forbidden = {w.lower() for w in record["forbidden_targets"]}
    answers = prompts.drop_duplicates("fact_id").set_index("fact_id")["answer"].str.lower()
    fresh = table[~table["fact_id"].map(answers).isin(forbidden)]
    effect = total_effect(fresh)
    return {
        Card.n_never_forbidden: effect[S.n_facts],
        Card.never_forbidden_known: effect[S.frac_known] if effect[S.n_facts] else None,
        Card.never_forbidden_effect: effect[S.total_effect] if effect[S.n_kept] else None,
    }
