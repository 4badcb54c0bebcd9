"""The numbers the paper reports, gathered from the workflow's artifacts.

Pure functions of loaded artifacts and nothing LaTeX-specific (rendering and
escaping live in `forbidden_facts.tables_latex`): a `Run` holds what the workflow
wrote for one (model, dataset) pair; `run_numbers` turns it into one flat dict of
plain values (the source of every table cell and every macro of the paper's text),
`paper_numbers` does the same for the published numbers
(``config/paper_reference.yaml``) under the same keys, and the ``*_claim`` entries
decide which sentence the paper may state.

Statistics over units that are not independent are taken over the independent
unit: the total effect's interval over facts (its two pairs are averaged first),
the attack's attack-minus-control over facts, and the heads' OV scores and
attention over heads (a t-interval of the group mean).

Example:
    >>> run = load_run("toy", "curated", **paths)  # doctest: +SKIP
    >>> numbers = run_numbers(run, top_k=10)  # doctest: +SKIP
    >>> numbers["n_star_degenerate"], numbers["k_ninety"]  # doctest: +SKIP
    (True, 22)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from . import io
from .identification import head_share, t_interval


@dataclass
class Run:
    """The artifacts of one (model, dataset) pair that the paper reads."""

    model: str
    dataset: str
    inference: dict
    summary: dict
    components: pd.DataFrame
    heads: pd.DataFrame
    attack: dict
    attack_table: pd.DataFrame | None = None
    card: dict | None = None

    @property
    def provenance(self) -> dict:
        """Model id/revision, dataset checksum and code version of the run."""
        prov: dict = {}
        for source in (self.inference, self.summary, self.attack):
            prov.update(
                {k: v for k, v in (source.get("provenance") or {}).items() if v is not None}
            )
        return prov


def load_run(
    model: str,
    dataset: str,
    *,
    inference: str | os.PathLike,
    summary: str | os.PathLike,
    components: str | os.PathLike,
    heads: str | os.PathLike,
    attack: str | os.PathLike,
    attack_table: str | os.PathLike | None = None,
    card: str | os.PathLike | None = None,
) -> Run:
    """Read one pair's artifacts (paths as the rules name them)."""
    return Run(
        model=model,
        dataset=dataset,
        inference=io.read_json(inference),
        summary=io.read_json(summary),
        components=io.read_parquet(components),
        heads=io.read_parquet(heads),
        attack=io.read_json(attack),
        attack_table=io.read_parquet(attack_table) if attack_table else None,
        card=io.read_json(card) if card else None,
    )


def load_reference(path: str | os.PathLike) -> dict:
    """The paper's published numbers (``config/paper_reference.yaml``)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    data.setdefault("models", {})
    return data


def paper_match(run: Run, reference: dict) -> dict:
    """The paper's model that a run is compared with.

    A run is matched by its config model name, or by the hub id in its provenance.
    Runs of models the paper did not run (the organism, SmolLM2) get the reference's
    `default_model`, flagged as a proxy; so do runs on another dataset.

    Returns:
        ``{"name", "label", "spec", "proxy"}``; ``spec`` is empty when the reference
        has nothing to offer.
    """
    models = reference.get("models") or {}
    name = run.model if run.model in models else None
    if name is None:
        model_id = run.provenance.get("model_id")
        name = next(
            (n for n, spec in models.items() if model_id and spec.get("repo_id") == model_id), None
        )
    matched = name is not None
    if name is None:
        name = reference.get("default_model") if reference.get("default_model") in models else None
    spec = dict(models.get(name) or {})
    dataset = reference.get("dataset")
    same_data = dataset is None or run.dataset == dataset
    return {
        "name": name,
        "label": spec.get("label", name),
        "spec": spec,
        "proxy": bool(spec) and not (matched and same_data),
    }


# ---------------------------------------------------------------------------
# statistics


def _interval(values) -> tuple[float | None, float | None, float | None]:
    """Mean and 95% t-interval of independent values (None where undefined)."""
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return None, None, None
    mean, low, high = (float(v) for v in t_interval(x))
    return mean, (low if np.isfinite(low) else None), (high if np.isfinite(high) else None)


def _below(a_high, b_low) -> bool:
    """True when interval a lies entirely below interval b (both known)."""
    return a_high is not None and b_low is not None and a_high < b_low


def head_groups(heads: pd.DataFrame, top_k: int) -> dict:
    """OV score and forbidden-word attention of the top-k suppressor heads vs the rest.

    Each group's mean comes with a 95% t-interval over its heads. The OV claim (the
    top heads suppress what they read, more than the rest) holds when the top heads'
    interval lies below the rest's; the attention claim when their interval lies
    above the rest's.
    """
    out: dict[str, Any] = {"top_heads_k": int(top_k)}
    heads = heads if heads is not None else pd.DataFrame()
    top = heads.nsmallest(top_k, "rank") if len(heads) else heads
    rest = heads.drop(top.index) if len(heads) else heads
    out["n_top_heads"], out["n_other_heads"] = int(len(top)), int(len(rest))
    first = top.iloc[0] if len(top) else {}
    out["top_head"] = str(first["component"]) if len(top) else None
    out["top_head_ov"] = float(first["ov_score"]) if len(top) else None
    out["top_head_attn"] = float(first["attn_forbidden_c"]) if len(top) else None
    for group, frame in (("top_heads", top), ("other_heads", rest)):
        for name, column in (
            ("ov", "ov_score"),
            ("attn", "attn_forbidden_c"),
            ("attn_nc0", "attn_forbidden_nc0"),
            ("attn_nc1", "attn_forbidden_nc1"),
        ):
            values = frame[column] if column in frame else []
            mean, low, high = _interval(values)
            out[f"{group}_{name}"] = mean
            if name in ("ov", "attn"):
                out[f"{group}_{name}_low"], out[f"{group}_{name}_high"] = low, high
    top_ov, rest_ov = out["top_heads_ov"], out["other_heads_ov"]
    out["ov_contrast"] = top_ov - rest_ov if None not in (top_ov, rest_ov) else None
    top_attn, rest_attn = out["top_heads_attn"], out["other_heads_attn"]
    out["attn_ratio"] = top_attn / rest_attn if top_attn is not None and rest_attn else None
    out["ov_claim"] = _below(out["top_heads_ov_high"], out["other_heads_ov_low"])
    out["attn_claim"] = _below(out["other_heads_attn_high"], out["top_heads_attn_low"])
    return out


def attack_contrast(attack_table: pd.DataFrame | None) -> dict:
    """Attack minus control change in log-odds (log10), with its 95% interval over facts.

    The attack claim (inserting the answer lowers it more than an unrelated word) holds
    when the interval lies below 0.
    """
    out = {"attack_minus_control": None, "attack_minus_control_low": None}
    out["attack_minus_control_high"] = None
    if attack_table is not None and len(attack_table):
        wide = attack_table.pivot_table(
            index="fact_id", columns="variant", values="delta_logodds_log10", aggfunc="mean"
        )
        if {"attack", "control"} <= set(wide.columns):
            diff = (wide["attack"] - wide["control"]).dropna()
            mean, low, high = _interval(diff)
            out |= {
                "attack_minus_control": mean,
                "attack_minus_control_low": low,
                "attack_minus_control_high": high,
            }
    out["attack_claim"] = _below(out["attack_minus_control_high"], 0.0)
    return out


# ---------------------------------------------------------------------------
# the numbers of one run


def _share(k, n) -> float | None:
    return k / n if k and n else None


def run_numbers(run: Run, top_k: int = 10) -> dict[str, Any]:
    """Every number (and name) of one run that a table cell or the text uses.

    Keys are snake_case; `forbidden_facts.tables_latex` turns each into a macro
    (``total_effect`` -> ``\\TotalEffect``). Values are plain Python values: None when
    the artifacts do not define them (N* and the k-shares for a total effect <= 0).
    """
    inf, s, a = run.inference, run.summary, run.attack
    prov = run.provenance
    card = run.card or {}
    example = a.get("example") or {}
    n_components = s.get("n_components")
    total = s.get("total_effect_log10", inf.get("total_effect_log10"))
    total_ci = s.get("total_effect_ci") or [None, None]
    n_star_ci = s.get("n_star_ci") or [None, None]
    comps = run.components
    top_promotive = s.get("top_promotive") or []
    before = example.get("top5_before") or [{}]
    after = example.get("top5_after") or [{}]
    numbers = {
        "model_name": run.model,
        "dataset_name": run.dataset,
        "model_id": prov.get("model_id"),
        "model_revision": prov.get("model_revision"),
        "dataset_sha": prov.get("dataset_sha256"),
        "code_version": prov.get("code_version"),
        "n_params": card.get("n_params"),
        "n_layers": card.get("n_layers"),
        "n_heads": card.get("n_heads"),
        "n_facts": inf.get("n_facts"),
        "n_kept": inf.get("n_kept"),
        "frac_known": inf.get("frac_known"),
        "total_effect": total,
        "total_effect_std": inf.get("total_effect_std_log10"),
        "total_effect_low": total_ci[0],
        "total_effect_high": total_ci[1],
        # The model suppresses the forbidden answer: the total effect's interval over
        # facts lies above 0 (older summaries without an interval: the sign alone).
        "suppresses": bool(
            s.get("suppresses", total is not None and total > 0)
            if total_ci[0] is None
            else total_ci[0] > 0
        ),
        "total_effect_positive": total is not None and total > 0,
        "n_pairs": s.get("n_pairs"),
        "n_components": n_components,
        "n_star": s.get("n_star"),
        "n_star_frac": s.get("n_star_frac", _share(s.get("n_star"), n_components)),
        "n_star_degenerate": bool(s.get("n_star_degenerate", s.get("n_star") is None)),
        "n_star_reason": s.get("n_star_degenerate_reason"),
        "max_overshoot": s.get("max_overshoot_log10"),
        "n_star_heads": s.get("n_star_heads") if s.get("n_star") else None,
        "n_star_mlps": s.get("n_star_mlps") if s.get("n_star") else None,
        "n_star_ci_low": n_star_ci[0],
        "n_star_ci_high": n_star_ci[1],
        "k_fifty": s.get("k50"),
        "k_eighty": s.get("k80"),
        "k_ninety": s.get("k90"),
        "k_ninety_five": s.get("k95"),
        "k_ninety_frac": _share(s.get("k90"), n_components),
        "top_component": s.get("top_component"),
        "top_component_mean": s.get("top_component_mean_log10"),
        "n_suppressive": s.get("n_suppressive_significant"),
        "n_promotive": s.get("n_promotive_significant"),
        "n_positive": s.get("n_positive_mean"),
        "n_noise": int(comps["within_noise"].sum()) if "within_noise" in comps else None,
        "promotive_sum": s.get("promotive_sum_log10"),
        "positive_sum": s.get("positive_sum_log10"),
        "top_promotive": top_promotive[0] if top_promotive else None,
        "head_share": head_share(comps) if len(comps) else None,
        "attack_n_facts": a.get("n_facts"),
        "attack_delta": a.get("mean_delta_logodds_log10"),
        "control_delta": a.get("control_mean_delta_logodds_log10"),
        "attack_flipped": a.get("frac_top1_flipped"),
        "control_flipped": a.get("control_frac_top1_flipped"),
        "example_fact": example.get("fact_id"),
        "example_prefix": example.get("prefix"),
        "example_answer": example.get("answer"),
        "example_forbidden": example.get("forbidden_word"),
        "example_inserted": (example.get("inserted") or "").strip() or None,
        "example_p_before": example.get("p_before"),
        "example_p_after": example.get("p_after"),
        "example_delta": example.get("delta_logodds_log10"),
        "example_top_before": before[0].get("token"),
        "example_top_after": after[0].get("token"),
        # The organism only (its model card): the effect on facts whose answer was
        # never the forbidden target in training, i.e. the part a general mechanism
        # carries (docs/organism.md).
        "organism": "total_effect_never_forbidden_log10" in card,
        "never_forbidden_effect": card.get("total_effect_never_forbidden_log10"),
        "n_never_forbidden": card.get("n_facts_never_forbidden"),
        "never_forbidden_known": card.get("frac_known_never_forbidden"),
    }
    numbers |= head_groups(run.heads, top_k)
    numbers |= attack_contrast(run.attack_table)
    if numbers["attack_minus_control"] is None and None not in (
        numbers["attack_delta"],
        numbers["control_delta"],
    ):
        numbers["attack_minus_control"] = numbers["attack_delta"] - numbers["control_delta"]
    return numbers


def paper_numbers(spec: dict) -> dict[str, Any]:
    """A paper model's published numbers under `run_numbers`'s keys (None where unstated)."""
    ex = spec.get("attack_example") or {}
    top_ov, rest_ov = spec.get("top_heads_ov_score"), spec.get("other_heads_ov_score")
    n_star, n_components = spec.get("n_star"), spec.get("n_components")
    return {
        "model_name": spec.get("label"),
        "n_facts": spec.get("n_facts"),
        "n_kept": spec.get("n_kept"),
        "total_effect": spec.get("total_effect_log10"),
        "total_effect_std": spec.get("total_effect_std_log10"),
        "n_components": n_components,
        "n_star": n_star,
        "n_star_frac": n_star / n_components if n_star and n_components else None,
        "n_star_heads": spec.get("n_star_heads"),
        "n_star_mlps": spec.get("n_star_mlps"),
        "k_ninety": spec.get("k90"),
        "top_component": spec.get("top_component"),
        "top_component_mean": spec.get("top_component_mean_log10"),
        "head_share": spec.get("head_share"),
        "top_heads_k": spec.get("top_heads_k"),
        "top_head": spec.get("top_head"),
        "top_head_ov": spec.get("top_head_ov_score"),
        "top_heads_ov": top_ov,
        "other_heads_ov": rest_ov,
        "ov_contrast": top_ov - rest_ov if None not in (top_ov, rest_ov) else None,
        "top_heads_attn": spec.get("top_heads_attn_forbidden_c"),
        "other_heads_attn": spec.get("other_heads_attn_forbidden_c"),
        "attack_minus_control": spec.get("attack_minus_control_log10"),
        "example_answer": ex.get("answer"),
        "example_forbidden": ex.get("forbidden_word"),
        "example_inserted": (ex.get("inserted") or "").strip() or None,
        "example_p_before": ex.get("p_before"),
        "example_p_after": ex.get("p_after"),
        "example_top_after": ex.get("top1_after"),
    }


# ---------------------------------------------------------------------------
# rows of the per-run tables


def top_suppressive(components: pd.DataFrame, n_star: int | None, top_n: int) -> pd.DataFrame:
    """The first N* components of the ranking (at most `top_n`; `top_n` when N* is unknown)."""
    n = min(int(n_star), top_n) if n_star else top_n
    return components.sort_values("rank").head(n)


def top_promotive(components: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Components with a positive mean nc->c effect beyond float noise, largest first."""
    positive = components["mean_log10"] > 0
    if "within_noise" in components:
        positive &= ~components["within_noise"].astype(bool)
    return components[positive].sort_values("mean_log10", ascending=False).head(top_n)


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts, with missing values (NaN, NA) as None."""
    return [
        {k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in rec.items()}
        for rec in frame.to_dict("records")
    ]


class Lenient(dict):
    """A dict whose absent keys read as None, so a template prints "--" for them."""

    def __missing__(self, key):
        return None


def top5(example: dict) -> list[dict]:
    """The attack example's top-5 tokens before and after, side by side by rank."""
    before = example.get("top5_before") or []
    after = example.get("top5_after") or []
    return [
        {
            "rank": i + 1,
            "before": Lenient(before[i] if i < len(before) else {}),
            "after": Lenient(after[i] if i < len(after) else {}),
        }
        for i in range(max(len(before), len(after)))
    ]


# ---------------------------------------------------------------------------
# everything the templates and values.tex see


def paper_context(runs: list[Run], reference: dict, top_k: int = 10, top_n: int = 40) -> dict:
    """The values behind every table and macro of the paper, for all runs.

    Returns:
        ``runs``: per run, ``numbers`` (`run_numbers`), ``paper`` (the matched paper
        model's `paper_numbers`), ``paper_label``, ``proxy``, ``suppressive`` and
        ``promotive`` component rows and the attack example's ``top5``;
        ``paper_models``: every paper model's numbers by config name; and the
        reference's ``source``, ``paper_dataset``, ``default_label`` and
        ``default_model``.
    """
    if not runs:
        raise ValueError("paper_context: no runs (config `run.models` and `run.datasets`)")
    entries = []
    for run in runs:
        numbers = run_numbers(run, top_k)
        match = paper_match(run, reference)
        supp = records(top_suppressive(run.components, numbers["n_star"], top_n))
        for row in supp:
            row["position"] = int(row["rank"]) + 1
        entries.append(
            {
                "model": run.model,
                "dataset": run.dataset,
                "numbers": numbers,
                "paper": paper_numbers(match["spec"]),
                "paper_label": match["label"],
                "paper_name": match["name"],
                "proxy": match["proxy"],
                "suppressive": supp,
                "promotive": records(top_promotive(run.components, top_n)),
                "example": Lenient(run.attack.get("example") or {}),
                "top5": top5(run.attack.get("example") or {}),
            }
        )
    models = reference.get("models") or {}
    default = reference.get("default_model")
    return {
        "runs": entries,
        "paper_models": {name: paper_numbers(spec) for name, spec in models.items()},
        "default_model": default,
        "default_label": (models.get(default) or {}).get("label", default),
        "source": reference.get("source", "the paper"),
        "paper_dataset": reference.get("dataset_label", reference.get("dataset")),
        "any_proxy": any(e["proxy"] for e in entries),
        "top_k": top_k,
        "top_n": top_n,
    }
