"""The training record: what the fine-tune saw, and the facts the analysis must drop."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .recipe import FINETUNE_RECORD


def read_finetune_record(model_dir: str | Path) -> dict | None:
    """The fine-tune's record, or None for a model that was not fine-tuned here."""
    path = Path(model_dir) / FINETUNE_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def exclusion_reasons(facts: pd.DataFrame, record: dict) -> pd.Series:
    """Why each fact may not be analysed (empty string: never taught), aligned with `facts`.

    A fact is excluded when its answer was a training target or a forbidden word
    (``answer_trained``), or when the fact itself was in a training prompt (same
    fact_id or prefix: ``fact_trained``). Answers compare lower-cased.
    """
    words = {w.lower() for w in record["target_answers"]} | {
        w.lower() for w in record["forbidden_targets"]
    }
    ids = set(record["trained_fact_ids"])
    prefixes = set(record.get("trained_prefixes", []))
    out = []
    for _, fact in facts.iterrows():
        if str(fact["answer"]).lower() in words:
            out.append("answer_trained")
        elif str(fact["fact_id"]) in ids or fact["prefix"] in prefixes:
            out.append("fact_trained")
        else:
            out.append("")
    return pd.Series(out, index=facts.index, dtype=str)


def drop_trained(facts: pd.DataFrame, record: dict | None) -> tuple[pd.DataFrame, dict]:
    """The facts a fine-tuned model never saw in training, and how many were dropped why.

    Returns:
        (kept facts, summary) with ``n_excluded_trained`` and ``excluded_by_reason``
        (both 0 / empty for a model without a fine-tune record).
    """
    from ..artifacts import Prompts as P

    if record is None:
        return facts, {P.n_excluded_trained: 0, P.excluded_by_reason: {}}
    reasons = exclusion_reasons(facts, record)
    counts = reasons[reasons != ""].value_counts().to_dict()
    return facts[reasons == ""], {
        P.n_excluded_trained: int((reasons != "").sum()),
        P.excluded_by_reason: {k: int(v) for k, v in sorted(counts.items())},
    }
