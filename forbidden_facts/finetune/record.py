"""The training record: what the fine-tune saw, and the facts the analysis must drop.

The record (``finetune_record.json`` in the model folder) is the only account of which
facts, answers and words were trained into a fine-tuned model, so the analysis trusts it
only as written: the fine-tune step keeps its sha256 in the folder's ``provenance.json``
(`RECORD_SHA256`), and `trained_records` refuses a record that is missing, unreadable or
changed since. A fine-tune of a fine-tune carries both trainings' facts: the records of
the whole chain of bases are read, and their exclusions add up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..provenance import sha256_file
from .recipe import FINETUNE_RECORD

# The key of a fine-tuned folder's provenance.json that holds its record's sha256.
RECORD_SHA256 = "record_sha256"
# What a record must hold for the exclusions (lists of strings, and the base it trained).
_RECORD_LISTS = ("target_answers", "forbidden_targets", "trained_fact_ids")


class FinetuneRecordError(RuntimeError):
    """A fine-tuned model whose training record is missing, unreadable or changed."""


def read_finetune_record(model_dir: str | Path) -> dict | None:
    """The fine-tune's record as it is on disk, or None for a folder without one.

    For what the record says of the model (its card, its training words); the analysis
    reads records through `trained_records`, which checks them.
    """
    path = Path(model_dir) / FINETUNE_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def record_fingerprint(model_dir: str | Path) -> str:
    """The sha256 of a folder's record now ("missing" when absent): cheap, for planning.

    The prompts rule takes the fingerprints of its model's chain as a parameter, so that
    Snakemake reruns the prompts (which then check the record) when a record changes or
    goes, although the model folder's timestamp does not move.
    """
    path = Path(model_dir) / FINETUNE_RECORD
    return sha256_file(path) if path.is_file() else "missing"


def _refuse(model_dir: Path, problem: str) -> FinetuneRecordError:
    return FinetuneRecordError(
        f"{problem} Without a trustworthy record the analysis cannot leave out the facts "
        f"trained into {model_dir.name}, so it stops here. Delete {model_dir} and rerun "
        "snakemake: the fine-tune runs again and writes its record with the weights."
    )


def checked_record(model_dir: str | Path) -> dict:
    """A fine-tuned folder's record, refused unless it is the one the fine-tune wrote.

    Raises:
        FinetuneRecordError: the record or the folder's provenance.json is missing or
            unreadable, the record's sha256 differs from the one the fine-tune kept,
            or it lacks a list the exclusions need.
    """
    model_dir = Path(model_dir)
    path = model_dir / FINETUNE_RECORD
    prov_path = model_dir / "provenance.json"
    if not path.is_file():
        raise _refuse(model_dir, f"{path}, the fine-tune's training record, is missing.")
    try:
        expected = json.loads(prov_path.read_text()).get(RECORD_SHA256)
    except (OSError, ValueError, AttributeError) as err:
        raise _refuse(
            model_dir, f"{prov_path} is missing or unreadable ({type(err).__name__}: {err})."
        ) from err
    actual = sha256_file(path)
    if actual != expected:
        kept = (
            f"{prov_path.name} keeps {expected[:12]}..."
            if expected
            else (f"{prov_path.name} keeps none (a fine-tune from before records were checked)")
        )
        raise _refuse(
            model_dir,
            f"{path} is not the record the fine-tune wrote (its sha256 is {actual[:12]}..., "
            f"{kept}): it was edited, truncated or replaced.",
        )
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise _refuse(model_dir, f"{path} is not valid JSON ({err}).") from err
    bad = [k for k in _RECORD_LISTS if not isinstance(record.get(k), list)]
    if bad or not isinstance(record.get("base_dir"), str):
        raise _refuse(model_dir, f"{path} lacks {', '.join(bad) or 'base_dir'}.")
    return record


def trained_records(chain: Sequence[str | Path]) -> list[dict]:
    """The checked records of a fine-tuned model and of each fine-tuned base below it.

    Args:
        chain: The model's folder and its fine-tuned bases' folders, nearest first
            (`finetune_chain`; empty for a model that was not fine-tuned here).
    """
    return [checked_record(folder) for folder in chain]


def finetune_chain(model_dir: str | Path) -> list[Path]:
    """A folder's chain of fine-tunes, found from the folders alone (for steps run by hand).

    Under Snakemake the config names the chain (workflow/rules/common.smk,
    `get_finetune_chain`); by hand, a folder counts as fine-tuned when its provenance or
    a record says so, and each checked record names its base.
    """
    chain: list[Path] = []
    folder = Path(model_dir)
    while _is_finetuned(folder):
        if folder.resolve() in {f.resolve() for f in chain}:
            raise _refuse(folder, f"{folder} is its own base along the chain {chain}.")
        chain.append(folder)
        folder = Path(checked_record(folder)["base_dir"])
    return chain


def _is_finetuned(folder: Path) -> bool:
    if (folder / FINETUNE_RECORD).exists():
        return True
    try:
        return json.loads((folder / "provenance.json").read_text()).get("source") == "finetune"
    except (OSError, ValueError, AttributeError):
        return False


def taught_words(records: Sequence[dict]) -> set[str]:
    """Every answer and forbidden word the chain's trainings used, lower-cased."""
    return {
        w.lower()
        for record in records
        for k in ("target_answers", "forbidden_targets")
        for w in record[k]
    }


def exclusion_reasons(facts: pd.DataFrame, records: Sequence[dict]) -> pd.Series:
    """Why each fact may not be analysed (empty string: never taught), aligned with `facts`.

    A fact is excluded when its answer was a training target or a forbidden word of
    any training in the chain (``answer_trained``), or when the fact itself was in a
    training prompt (same fact_id or prefix: ``fact_trained``). Answers compare
    lower-cased.
    """
    words = taught_words(records)
    ids = {str(i) for record in records for i in record["trained_fact_ids"]}
    prefixes = {p for record in records for p in record.get("trained_prefixes", [])}
    out = []
    for _, fact in facts.iterrows():
        if str(fact["answer"]).lower() in words:
            out.append("answer_trained")
        elif str(fact["fact_id"]) in ids or fact["prefix"] in prefixes:
            out.append("fact_trained")
        else:
            out.append("")
    return pd.Series(out, index=facts.index, dtype=str)


def drop_trained(facts: pd.DataFrame, records: Sequence[dict]) -> tuple[pd.DataFrame, dict]:
    """The facts that no training in a fine-tuned model's chain saw, and how many were dropped.

    Args:
        facts: The dataset's facts.
        records: The checked records of the model's chain (`trained_records`); empty for
            a model that was not fine-tuned here.

    Returns:
        (kept facts, summary) with ``n_excluded_trained`` and ``excluded_by_reason``
        (both 0 / empty for a model without a fine-tune record).
    """
    from ..artifacts import Prompts as P

    if not records:
        return facts, {P.n_excluded_trained: 0, P.excluded_by_reason: {}}
    reasons = exclusion_reasons(facts, records)
    counts = reasons[reasons != ""].value_counts().to_dict()
    return facts[reasons == ""], {
        P.n_excluded_trained: int((reasons != "").sum()),
        P.excluded_by_reason: {k: int(v) for k, v in sorted(counts.items())},
    }
