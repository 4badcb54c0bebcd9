"""The paper's tables and numbers, built from the workflow's artifacts.

Everything here is a pure function of loaded artifacts: a `Run` holds what the
workflow wrote for one (model, dataset) pair, the `*_context` functions turn a
list of runs plus the paper's published numbers (``config/paper_reference.yaml``)
into plain dicts, and jinja2 templates (``paper/templates/*.tex.j2``) turn those
into booktabs tables. `values_tex` writes one ``\\newcommand`` per number the
paper's text uses, so that no number in ``paper/main.tex`` is typed by hand.

The templates use LaTeX-friendly delimiters, so braces and ``%`` stay LaTeX's:
``((( x )))`` prints, ``((* for ... *))`` is a block, ``((= ... =))`` a comment.
Numbers go through the ``fmt`` filter ("--" when missing), text through
``latex_escape``.

Example:
    >>> runs = [load_run("toy", "curated", "results/toy/curated")]  # doctest: +SKIP
    >>> tables = render_tables(runs, load_reference("config/paper_reference.yaml"),
    ...                        "paper/templates")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import yaml

from . import io

MISSING = "--"

# The tables `render_tables` writes, one template `<name>.tex.j2` each.
TABLES = ("kept_facts", "n_star", "top_components", "head_stats", "attack")

# The artifacts of one (model, dataset) pair that the tables read, by role.
RUN_FILES = {
    "inference": "inference_summary.json",
    "summary": "summary.json",
    "components": "components.parquet",
    "heads": "heads.parquet",
    "attack": "attack_summary.json",
}

_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # Not special to TeX, but ligatures or odd glyphs in T1 text.
    "-": "-{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': r"\textquotedbl{}",
    "`": r"\textasciigrave{}",
    "'": r"\textquotesingle{}",
}


def latex_escape(value: Any) -> str:
    """Escape text for LaTeX (pdflatex, T1 fonts); "--" for a missing value.

    Escapes ``_ % & # $ { } ~ ^ \\`` and a few characters that T1 fonts turn
    into ligatures. Model tokens can be anything: SentencePiece's word marker
    "▁" becomes a visible space, control characters their escape sequence, and
    characters pdflatex cannot typeset without extra packages ``<U+XXXX>``.

    Example:
        >>> latex_escape("L18H9ATN_x & 5%")
        'L18H9ATN\\\\_x \\\\& 5\\\\%'
    """
    if _missing(value):
        return MISSING
    out = []
    for ch in str(value):
        if ch in _SPECIALS:
            out.append(_SPECIALS[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        elif ch == "\u2581":
            out.append(r"\textvisiblespace{}")
        elif ch == "\n":
            out.append(r"\textbackslash{}n")
        elif ch == "\t":
            out.append(r"\textbackslash{}t")
        elif "\u00c0" <= ch <= "\u00ff" and unicodedata.category(ch).startswith("L"):
            out.append(ch)  # Latin-1 letters: T1 fonts have them
        else:
            out.append(rf"\textless{{}}U+{ord(ch):04X}\textgreater{{}}")
    # "-{}" only matters before another "-"; keep plain hyphens readable elsewhere.
    return re.sub(r"-\{\}(?!-)", "-", "".join(out))


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | numbers.Real) and not isinstance(value, bool):
        try:
            return not math.isfinite(float(value))
        except (TypeError, ValueError):
            return False
    try:
        return bool(pd.isna(value)) if not isinstance(value, list | tuple | dict) else False
    except (TypeError, ValueError):
        return False


def _number(text: str) -> str:
    # A minus sign, not a hyphen, in text and in math mode alike.
    return r"\ensuremath{-}" + text[1:] if text.startswith("-") else text


def fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    """Format a number for a table or the text; "--" when it is missing.

    Args:
        value: An int, float, numpy scalar or None/NaN. Strings are escaped.
        digits: Decimals of a float (ints print whole unless `percent`).
        percent: Multiply by 100 and append ``\\%``.

    Example:
        >>> fmt(-0.3651, 3), fmt(None), fmt(4251), fmt(0.953, 1, percent=True)
        ('\\\\ensuremath{-}0.365', '--', '4251', '95.3\\\\%')
    """
    if _missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral) and not percent:
        return _number(str(int(value)))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return latex_escape(value)
    if percent:
        x *= 100
    text = f"{x:.{digits}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    return _number(text) + (r"\%" if percent else "")


def pfmt(value: Any, percent: bool = False) -> str:
    """Format a published number as the paper states it (no added digits).

    Example:
        >>> pfmt(0.0086), pfmt(-2.5), pfmt(0.15, percent=True)
        ('0.0086', '\\\\ensuremath{-}2.5', '15\\\\%')
    """
    if _missing(value):
        return MISSING
    if isinstance(value, str):
        return latex_escape(value)
    x = float(value) * (100 if percent else 1)
    return _number(format(x, "g")) + (r"\%" if percent else "")


def environment(template_dir: str | os.PathLike) -> jinja2.Environment:
    """A jinja2 environment whose delimiters do not clash with LaTeX."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.fspath(template_dir)),
        block_start_string="((*",
        block_end_string="*))",
        variable_start_string="(((",
        variable_end_string=")))",
        comment_start_string="((=",
        comment_end_string="=))",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(latex_escape=latex_escape, e=latex_escape, fmt=fmt, pfmt=pfmt)
    return env


# ---------------------------------------------------------------------------
# loading


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
    card: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def provenance(self) -> dict:
        """Model id/revision, dataset checksum and code version of the run."""
        prov: dict = {}
        for source in (self.inference, self.summary, self.attack):
            prov.update(
                {k: v for k, v in (source.get("provenance") or {}).items() if v is not None}
            )
        return prov

    @property
    def slug(self) -> str:
        return slug(self.model) + slug(self.dataset)


def load_run(
    model: str,
    dataset: str,
    directory: str | os.PathLike | None = None,
    card: str | os.PathLike | None = None,
    **paths: str | os.PathLike,
) -> Run:
    """Read a pair's artifacts, from `directory` or from paths named as in `RUN_FILES`."""
    files = {}
    for role, name in RUN_FILES.items():
        if role in paths:
            files[role] = paths[role]
        elif directory is not None:
            files[role] = Path(directory) / name
        else:
            raise ValueError(f"load_run({model!r}, {dataset!r}): no path for {role} ({name})")
    return Run(
        model=model,
        dataset=dataset,
        inference=io.read_json(files["inference"]),
        summary=io.read_json(files["summary"]),
        components=io.read_parquet(files["components"]),
        heads=io.read_parquet(files["heads"]),
        attack=io.read_json(files["attack"]),
        card=io.read_json(card) if card else None,
    )


def load_reference(path: str | os.PathLike) -> dict:
    """The paper's published numbers (``config/paper_reference.yaml``)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    data.setdefault("models", {})
    return data


# ---------------------------------------------------------------------------
# names

_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")


def slug(name: str) -> str:
    """A letters-only CamelCase name usable in a LaTeX macro.

    Example:
        >>> slug("llama2-7b-chat"), slug("toy")
        ('LlamaTwoSevenBChat', 'Toy')
    """
    words = []
    for part in re.findall(r"[A-Za-z]+|\d", name):
        words.append(_DIGITS[int(part)] if part.isdigit() else part[0].upper() + part[1:])
    if not words:
        raise ValueError(f"cannot make a LaTeX macro name from {name!r}")
    return "".join(words)


def paper_match(run: Run, reference: Mapping) -> dict:
    """The paper's numbers that a run is compared with.

    A run is matched by its config model name, or by the hub id in its
    provenance. Runs of other models (the toy) get the reference's
    `default_model`, flagged as a proxy; so do runs on another dataset.

    Returns:
        ``{"name", "label", "numbers", "proxy", "dataset"}``; ``numbers`` is
        empty when the reference has nothing to offer.
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
        "numbers": spec,
        "proxy": bool(spec) and not (matched and same_data),
        "dataset": dataset,
    }


# ---------------------------------------------------------------------------
# numbers derived from the artifacts


def head_groups(heads: pd.DataFrame, top_k: int) -> dict:
    """OV score and forbidden-word attention of the top-k suppressor heads vs the rest."""
    out = {"k": int(top_k)}
    if heads is None or not len(heads):
        keys = (
            "top_head",
            "top_head_ov",
            "top_head_attn_c",
            "top_ov",
            "rest_ov",
            "top_attn_c",
            "rest_attn_c",
            "top_attn_nc0",
            "rest_attn_nc0",
            "top_attn_nc1",
            "rest_attn_nc1",
        )
        return out | dict.fromkeys(keys) | {"n_top": 0, "n_rest": 0}
    top = heads.nsmallest(top_k, "rank")
    rest = heads.drop(top.index)
    first = top.iloc[0]

    def mean(frame, column):
        return float(frame[column].mean()) if len(frame) and column in frame else None

    return out | {
        "n_top": int(len(top)),
        "n_rest": int(len(rest)),
        "top_head": str(first["component"]),
        "top_head_ov": float(first["ov_score"]),
        "top_head_attn_c": float(first["attn_forbidden_c"]),
        "top_ov": mean(top, "ov_score"),
        "rest_ov": mean(rest, "ov_score"),
        "top_attn_c": mean(top, "attn_forbidden_c"),
        "rest_attn_c": mean(rest, "attn_forbidden_c"),
        "top_attn_nc0": mean(top, "attn_forbidden_nc0"),
        "rest_attn_nc0": mean(rest, "attn_forbidden_nc0"),
        "top_attn_nc1": mean(top, "attn_forbidden_nc1"),
        "rest_attn_nc1": mean(rest, "attn_forbidden_nc1"),
    }


class _Numbers(dict):
    """A dict whose absent keys read as None, so templates print "--" for them."""

    def __missing__(self, key):
        return None


def _records(frame: pd.DataFrame) -> list[dict]:
    rows = []
    for rec in frame.to_dict("records"):
        rows.append(_Numbers({k: (None if _missing(v) else v) for k, v in rec.items()}))
    return rows


def top_suppressive(components: pd.DataFrame, n_star: int | None, top_n: int) -> pd.DataFrame:
    """The first N* components of the ranking (at most `top_n`; `top_n` when N* is unknown)."""
    n = min(int(n_star), top_n) if n_star else top_n
    return components.sort_values("rank").head(n)


def top_promotive(components: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Components with a positive mean nc→c effect (Waluigi), largest first."""
    positive = components[components["mean_log10"] > 0]
    return positive.sort_values("mean_log10", ascending=False).head(top_n)


def _ci(summary: Mapping) -> tuple:
    ci = summary.get("n_star_ci") or [None, None]
    return (ci[0], ci[1]) if len(ci) == 2 else (None, None)


def _pair(run: Run, reference: Mapping) -> dict:
    paper = paper_match(run, reference)
    numbers = _Numbers(paper["numbers"])
    numbers["attack_example"] = _Numbers(numbers["attack_example"] or {})
    return {
        "model": run.model,
        "dataset": run.dataset,
        "slug": run.slug,
        "paper": numbers,
        "paper_label": paper["label"],
        "proxy": paper["proxy"],
    }


def _common(runs: list[Run], reference: Mapping) -> dict:
    default = (reference.get("models") or {}).get(reference.get("default_model")) or {}
    return {
        "source": reference.get("source", "the paper"),
        "paper_dataset": reference.get("dataset_label", reference.get("dataset")),
        "default_label": default.get("label", reference.get("default_model")),
        "any_proxy": any(paper_match(r, reference)["proxy"] for r in runs),
    }


# ---------------------------------------------------------------------------
# table contexts


def kept_facts_context(runs: list[Run], reference: Mapping) -> dict:
    """Facts, kept facts and the total effect per run, beside the paper's."""
    rows = []
    for run in runs:
        inf = run.inference
        rows.append(
            _pair(run, reference)
            | {
                "n_facts": inf.get("n_facts"),
                "n_kept": inf.get("n_kept"),
                "frac_known": inf.get("frac_known"),
                "total_effect": inf.get("total_effect_log10"),
                "total_effect_std": inf.get("total_effect_std_log10"),
            }
        )
    return _common(runs, reference) | {"rows": rows}


def n_star_context(runs: list[Run], reference: Mapping) -> dict:
    """N* with its heads/MLPs and bootstrap CI, and k50/k90, beside the paper's."""
    rows = []
    for run in runs:
        s = run.summary
        low, high = _ci(s)
        rows.append(
            _pair(run, reference)
            | {
                "n_components": s.get("n_components"),
                "n_star": s.get("n_star"),
                "n_star_heads": s.get("n_star_heads"),
                "n_star_mlps": s.get("n_star_mlps"),
                "ci_low": low,
                "ci_high": high,
                "k50": s.get("k50"),
                "k80": s.get("k80"),
                "k90": s.get("k90"),
                "k95": s.get("k95"),
                "n_promotive": s.get("n_promotive_significant"),
                "n_positive": s.get("n_positive_mean"),
                "positive_sum": s.get("positive_sum_log10"),
            }
        )
    return _common(runs, reference) | {"rows": rows}


def top_components_context(runs: list[Run], reference: Mapping, top_n: int = 40) -> dict:
    """Per run: the top-N* suppressive components and the top promotive ones."""
    tables = []
    for run in runs:
        s = run.summary
        comps = run.components
        supp = top_suppressive(comps, s.get("n_star"), top_n)
        promo = top_promotive(comps, top_n)
        supp_rows = _records(supp)
        for row in supp_rows:
            row["position"] = int(row["rank"]) + 1
        tables.append(
            _pair(run, reference)
            | {
                "n_star": s.get("n_star"),
                "n_components": len(comps),
                "top_n": top_n,
                "suppressive": supp_rows,
                "promotive": _records(promo),
                "n_promotive": s.get("n_promotive_significant"),
                "promotive_sum": s.get("promotive_sum_log10"),
            }
        )
    return _common(runs, reference) | {"runs": tables}


def head_stats_context(runs: list[Run], reference: Mapping, top_k: int = 10) -> dict:
    """OV scores and forbidden-word attention, top-k heads vs the rest, beside the paper's."""
    rows = [_pair(run, reference) | head_groups(run.heads, top_k) for run in runs]
    return _common(runs, reference) | {"rows": rows, "top_k": top_k}


def attack_context(runs: list[Run], reference: Mapping) -> dict:
    """Self-insertion attack vs control per run, and each run's strongest example."""
    rows = []
    for run in runs:
        a = run.attack
        example = _Numbers(a.get("example") or {})
        before = [_Numbers(t) for t in example["top5_before"] or []]
        after = [_Numbers(t) for t in example["top5_after"] or []]
        n = max(len(before), len(after))
        top5 = [
            {
                "rank": i + 1,
                "before": before[i] if i < len(before) else _Numbers(),
                "after": after[i] if i < len(after) else _Numbers(),
            }
            for i in range(n)
        ]
        rows.append(
            _pair(run, reference)
            | {
                "n_facts": a.get("n_facts"),
                "delta": a.get("mean_delta_logodds_log10"),
                "control_delta": a.get("control_mean_delta_logodds_log10"),
                "flipped": a.get("frac_top1_flipped"),
                "control_flipped": a.get("control_frac_top1_flipped"),
                "control_minus_attack": a.get("control_minus_attack_log10"),
                "example": example,
                "top5": top5,
            }
        )
    return _common(runs, reference) | {"rows": rows}


CONTEXTS = {
    "kept_facts": kept_facts_context,
    "n_star": n_star_context,
    "top_components": top_components_context,
    "head_stats": head_stats_context,
    "attack": attack_context,
}


def render(template_dir: str | os.PathLike, name: str, context: Mapping) -> str:
    """Render ``<template_dir>/<name>.tex.j2`` with `context`."""
    return environment(template_dir).get_template(f"{name}.tex.j2").render(**context)


def render_tables(
    runs: list[Run],
    reference: Mapping,
    template_dir: str | os.PathLike,
    top_k: int = 10,
    top_n: int = 40,
) -> dict[str, str]:
    """Every table of `TABLES`, rendered: ``{name: latex}``."""
    if not runs:
        raise ValueError("render_tables: no runs")
    options = {"top_components": {"top_n": top_n}, "head_stats": {"top_k": top_k}}
    return {
        name: render(template_dir, name, CONTEXTS[name](runs, reference, **options.get(name, {})))
        for name in TABLES
    }


# ---------------------------------------------------------------------------
# values.tex


def _short(value: Any, n: int = 12) -> Any:
    # Full hashes overflow a line; 12 hex digits identify a file or commit.
    if isinstance(value, str) and re.fullmatch(r"(sha256:)?[0-9a-f]{13,}", value):
        return value[: n + (7 if value.startswith("sha256:") else 0)]
    return value


def run_values(run: Run, reference: Mapping, top_k: int = 10) -> dict[str, str]:
    """The macros of one run (names without prefix) → LaTeX text."""
    inf, s, a = run.inference, run.summary, run.attack
    prov = run.provenance
    example = a.get("example") or {}
    heads = head_groups(run.heads, top_k)
    card = run.card or {}
    low, high = _ci(s)
    top5_before = example.get("top5_before") or [{}]
    top5_after = example.get("top5_after") or [{}]
    paper = paper_match(run, reference)
    note = ""
    if paper["proxy"]:
        note = (
            f"The paper did not run {latex_escape(run.model)} on {latex_escape(run.dataset)}; "
            f"the numbers quoted from it are those of {latex_escape(paper['label'])} on "
            f"{latex_escape(reference.get('dataset_label', reference.get('dataset')))}, "
            "a reference for the mechanism's shape rather than a target for its magnitudes."
        )
    top_promotive_list = s.get("top_promotive") or []
    return {
        "ModelName": latex_escape(run.model),
        "DatasetName": latex_escape(run.dataset),
        "ModelId": latex_escape(prov.get("model_id")),
        "ModelRevision": latex_escape(_short(prov.get("model_revision"))),
        "DatasetSha": latex_escape(_short(prov.get("dataset_sha256"))),
        "CodeVersion": latex_escape(prov.get("code_version")),
        "NParams": fmt(card.get("n_params")),
        "NLayers": fmt(card.get("n_layers")),
        "NHeads": fmt(card.get("n_heads")),
        "NFacts": fmt(inf.get("n_facts")),
        "NKept": fmt(inf.get("n_kept")),
        "FracKnown": fmt(inf.get("frac_known"), 1, percent=True),
        "TotalEffect": fmt(inf.get("total_effect_log10"), 2),
        "TotalEffectStd": fmt(inf.get("total_effect_std_log10"), 2),
        "NPairs": fmt(s.get("n_pairs")),
        "NComponents": fmt(s.get("n_components")),
        "NStar": fmt(s.get("n_star")),
        "NStarHeads": fmt(s.get("n_star_heads")),
        "NStarMlps": fmt(s.get("n_star_mlps")),
        "NStarCILow": fmt(low, 0),
        "NStarCIHigh": fmt(high, 0),
        "KFifty": fmt(s.get("k50")),
        "KEighty": fmt(s.get("k80")),
        "KNinety": fmt(s.get("k90")),
        "KNinetyFive": fmt(s.get("k95")),
        "TopComponent": latex_escape(s.get("top_component")),
        "TopComponentMean": fmt(s.get("top_component_mean_log10"), 3),
        "NSuppressive": fmt(s.get("n_suppressive_significant")),
        "NPromotive": fmt(s.get("n_promotive_significant")),
        "NPositive": fmt(s.get("n_positive_mean")),
        "PromotiveSum": fmt(s.get("promotive_sum_log10"), 2),
        "PositiveSum": fmt(s.get("positive_sum_log10"), 2),
        "TopPromotive": latex_escape(top_promotive_list[0] if top_promotive_list else None),
        "TopHeadsK": fmt(heads["k"]),
        "TopHead": latex_escape(heads["top_head"]),
        "TopHeadOV": fmt(heads["top_head_ov"], 2),
        "TopHeadsOV": fmt(heads["top_ov"], 2),
        "OtherHeadsOV": fmt(heads["rest_ov"], 2),
        "TopHeadsAttn": fmt(heads["top_attn_c"], 4),
        "OtherHeadsAttn": fmt(heads["rest_attn_c"], 4),
        "AttackNFacts": fmt(a.get("n_facts")),
        "AttackDelta": fmt(a.get("mean_delta_logodds_log10"), 2),
        "ControlDelta": fmt(a.get("control_mean_delta_logodds_log10"), 2),
        "ControlMinusAttack": fmt(a.get("control_minus_attack_log10"), 2),
        "AttackFlipped": fmt(a.get("frac_top1_flipped"), 1, percent=True),
        "ControlFlipped": fmt(a.get("control_frac_top1_flipped"), 1, percent=True),
        "ExampleFact": latex_escape(example.get("fact_id")),
        "ExamplePrefix": latex_escape(example.get("prefix")),
        "ExampleAnswer": latex_escape(example.get("answer")),
        "ExampleForbidden": latex_escape(example.get("forbidden_word")),
        "ExampleInserted": latex_escape((example.get("inserted") or "").strip() or None),
        "ExamplePBefore": fmt(example.get("p_before"), 1, percent=True),
        "ExamplePAfter": fmt(example.get("p_after"), 1, percent=True),
        "ExampleDelta": fmt(example.get("delta_logodds_log10"), 2),
        "ExampleTopBefore": latex_escape(top5_before[0].get("token")),
        "ExampleTopAfter": latex_escape(top5_after[0].get("token")),
        "PaperNote": note,
    }


def paper_values(numbers: Mapping, label: str | None, reference: Mapping) -> dict[str, str]:
    """The macros of one paper model (names without the ``Paper`` prefix)."""
    ex = numbers.get("attack_example") or {}
    return {
        "Model": latex_escape(label),
        "Dataset": latex_escape(reference.get("dataset_label", reference.get("dataset"))),
        "NFacts": pfmt(numbers.get("n_facts")),
        "NKept": pfmt(numbers.get("n_kept")),
        "TotalEffect": pfmt(numbers.get("total_effect_log10")),
        "TotalEffectStd": pfmt(numbers.get("total_effect_std_log10")),
        "NStar": pfmt(numbers.get("n_star")),
        "NStarHeads": pfmt(numbers.get("n_star_heads")),
        "NStarMlps": pfmt(numbers.get("n_star_mlps")),
        "TopComponent": latex_escape(numbers.get("top_component")),
        "TopComponentMean": pfmt(numbers.get("top_component_mean_log10")),
        "TopHeadsK": pfmt(numbers.get("top_heads_k")),
        "TopHead": latex_escape(numbers.get("top_head")),
        "TopHeadOV": pfmt(numbers.get("top_head_ov_score")),
        "TopHeadsOV": pfmt(numbers.get("top_heads_ov_score")),
        "OtherHeadsOV": pfmt(numbers.get("other_heads_ov_score")),
        "TopHeadsAttn": pfmt(numbers.get("top_heads_attn_forbidden_c")),
        "OtherHeadsAttn": pfmt(numbers.get("other_heads_attn_forbidden_c")),
        "ExampleAnswer": latex_escape(ex.get("answer")),
        "ExampleForbidden": latex_escape(ex.get("forbidden_word")),
        "ExampleInserted": latex_escape((ex.get("inserted") or "").strip() or None),
        "ExamplePBefore": pfmt(ex.get("p_before"), percent=True),
        "ExamplePAfter": pfmt(ex.get("p_after"), percent=True),
        "ExampleTopAfter": latex_escape(ex.get("top1_after")),
    }


def values(runs: list[Run], reference: Mapping, top_k: int = 10) -> dict[str, str]:
    """Every macro of values.tex: name (letters only, no backslash) → LaTeX text.

    The first run's macros come unprefixed (``TotalEffect``) and every run's
    also prefixed with its slug (``ToyCuratedTotalEffect``). ``Paper*`` macros
    hold the paper's numbers that the first run is compared with, and
    ``Paper<Model>*`` those of every paper model.
    """
    if not runs:
        raise ValueError("values: no runs")
    out: dict[str, str] = {}
    slugs: dict[str, tuple[str, str]] = {}
    for run in runs:
        if run.slug in slugs and slugs[run.slug] != (run.model, run.dataset):
            raise ValueError(
                f"runs {slugs[run.slug]} and {(run.model, run.dataset)} share the macro prefix "
                f"{run.slug!r}; rename one"
            )
        slugs[run.slug] = (run.model, run.dataset)
    first = paper_match(runs[0], reference)
    out.update(run_values(runs[0], reference, top_k))
    out.update(
        {
            f"Paper{k}": v
            for k, v in paper_values(first["numbers"], first["label"], reference).items()
        }
    )
    out["PaperSource"] = latex_escape(reference.get("source"))
    out["NRuns"] = fmt(len(runs))
    out["RunList"] = ", ".join(f"{latex_escape(r.model)}/{latex_escape(r.dataset)}" for r in runs)
    for run in runs:
        out.update({f"{run.slug}{k}": v for k, v in run_values(run, reference, top_k).items()})
    for name, published in (reference.get("models") or {}).items():
        prefix = "Paper" + slug(name)
        out.update(
            {
                f"{prefix}{k}": v
                for k, v in paper_values(published, published.get("label", name), reference).items()
            }
        )
    bad = [k for k in out if not re.fullmatch(r"[A-Za-z]+", k)]
    if bad:
        raise ValueError(f"macro names must be letters only: {bad}")
    return out


def values_tex(runs: list[Run], reference: Mapping, top_k: int = 10) -> str:
    """values.tex: one ``\\newcommand{\\Name}{text}`` per number the paper uses."""
    lines = [
        "% Generated by rule `tables` (forbidden_facts.tables.values_tex); do not edit.",
        "% Unprefixed macros: "
        + f"{runs[0].model} / {runs[0].dataset}"
        + " (the first run of config run).",
    ]
    for name, text in values(runs, reference, top_k).items():
        lines.append(rf"\newcommand{{\{name}}}{{{text}}}")
    return "\n".join(lines) + "\n"


def parse_values_tex(text: str) -> dict[str, str]:
    """The macros of a values.tex (the inverse of `values_tex`, for tests and checks)."""
    return dict(re.findall(r"^\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}$", text, flags=re.M))


def iter_pairs(models: Iterable[str], datasets: Iterable[str]) -> list[tuple[str, str]]:
    """The (model, dataset) pairs of a config's `run`, models outer (the rules' order)."""
    datasets = list(datasets)
    return [(m, d) for m in models for d in datasets]
