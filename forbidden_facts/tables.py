"""The numbers the paper reports, gathered from the workflow's artifacts.

Pure functions of loaded artifacts and nothing LaTeX-specific (rendering and
escaping live in `forbidden_facts.tables_latex`): a `Run` holds what the workflow
wrote for one (model, dataset) pair; `run_numbers` turns it into one flat dict of
plain values (the source of every table cell and every macro of the paper's text)
by one rule: every number key that `forbidden_facts.artifacts` declares for the
run's artifacts, under its declared name. `paper_numbers` reads the published
numbers (``config/paper_reference.yaml``, `artifacts.Reference`) under the same
names, and the ``*_claim`` entries decide which sentence the paper may state.

The statistics themselves are computed where the artifacts are written, or by
`forbidden_facts.effects` (the head groups, over heads; the attack contrast, over
facts); nothing here recomputes them.

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

import pandas as pd
import yaml

from . import artifacts as A
from . import io
from .effects import head_groups


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
# the numbers of one run


def run_numbers(run: Run, top_k: int) -> dict[str, Any]:
    """Every number (and name) of one run that a table cell or the text uses.

    One rule for every value: the artifacts of `forbidden_facts.artifacts.RUN_NUMBERS`
    give each of their number keys under its name, and `forbidden_facts.tables_latex`
    turns each name into a macro (``total_effect`` -> ``\\TotalEffect``). The head
    groups are computed from heads.parquet with config `heads.top_k`. Values are plain
    Python values: None where the artifacts do not define them.
    """
    base = f"results/{run.model}/{run.dataset}"
    numbers: dict[str, Any] = {}
    numbers |= A.Provenance.numbers(run.provenance, f"{base} (provenance)")
    numbers |= A.Inference.numbers(run.inference, f"{base}/inference_summary.json")
    numbers |= A.Attribution.numbers(run.summary, f"{base}/summary.json")
    numbers |= A.Attack.numbers(run.attack, f"{base}/attack_summary.json")
    numbers |= A.HeadGroups.numbers(head_groups(run.heads, top_k))
    numbers |= (
        A.Card.numbers(run.card, f"results/{run.model}/model_card.json")
        if run.card is not None
        else dict.fromkeys(A.number_names([A.Card]))
    )
    return numbers


def paper_numbers(spec: dict) -> dict[str, Any]:
    """A paper model's published numbers under `run_numbers`'s names (None where unstated)."""
    numbers = A.Reference.numbers(spec)
    n_star, n_components = numbers["n_star"], numbers["n_components"]
    numbers[A.Attribution.n_star_frac.name] = (
        n_star / n_components if n_star and n_components else None
    )
    top, rest = numbers["top_heads_ov"], numbers["other_heads_ov"]
    numbers[A.HeadGroups.ov_contrast.name] = top - rest if None not in (top, rest) else None
    return numbers


# The paper's shape of the mechanism, as tests on one run's numbers, in the order the
# text gives them (docs/science.md § Across families). The thresholds are stated, not fitted:
# N* within a tenth of the components (the paper's 7b: 35 of 1057, 3.3%), heads carrying at
# least half of the suppression (the paper: 28 of its 35 N* components are heads).
SHAPE_MAX_N_STAR_FRAC = 0.10
SHAPE_MIN_HEAD_SHARE = 0.5


def mechanism_shape(numbers: dict[str, Any]) -> dict[str, Any]:
    """Whether one run shows the paper's shape: suppression carried by a few components,
    mostly attention heads, with significantly promotive ("Waluigi") components pushing back.

    Returns:
        ``{"same": bool, "missing": str | None}``: ``missing`` names the first test the run
        fails (None when it passes them all): ``no_suppression``, ``no_n_star``,
        ``degenerate_n_star``, ``large_n_star``, ``not_heads`` or ``no_promotive``; the
        paper's text words each (paper/templates/findings.tex.j2).
    """
    n_star, frac = numbers.get("n_star"), numbers.get("n_star_frac")
    head_share, n_promotive = numbers.get("head_share"), numbers.get("n_promotive")
    tests = (
        (bool(numbers.get("suppresses")), "no_suppression"),
        (bool(n_star), "no_n_star"),
        (not numbers.get("n_star_degenerate"), "degenerate_n_star"),
        (frac is not None and frac <= SHAPE_MAX_N_STAR_FRAC, "large_n_star"),
        (head_share is not None and head_share >= SHAPE_MIN_HEAD_SHARE, "not_heads"),
        (bool(n_promotive), "no_promotive"),
    )
    missing = next((why for ok, why in tests if not ok), None)
    return {"same": missing is None, "missing": missing}


def family_shapes(entries: list[dict]) -> list[dict]:
    """Per architecture (the model card's ``model_type``), its runs and their shape.

    Args:
        entries: `paper_context`'s ``runs`` (each with ``numbers`` and ``shape``).

    Returns:
        One dict per family in order of first appearance: ``family``, ``runs`` (the entries)
        and ``same`` (whether any of its runs shows the paper's shape).
    """
    families: dict[str, list[dict]] = {}
    for entry in entries:
        family = entry["numbers"].get("model_type") or "unknown"
        families.setdefault(family, []).append(entry)
    return [
        {"family": f, "runs": runs, "same": any(e["shape"]["same"] for e in runs)}
        for f, runs in families.items()
    ]


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


def paper_context(runs: list[Run], reference: dict, *, top_k: int, top_n: int) -> dict:
    """The values behind every table and macro of the paper, for all runs.

    Returns:
        ``runs``: per run, ``numbers`` (`run_numbers`), ``paper`` (the matched paper
        model's `paper_numbers`), ``paper_label``, ``proxy``, ``suppressive`` and
        ``promotive`` component rows, the attack example's ``top5`` and the ``shape``
        (`mechanism_shape`); ``families`` (`family_shapes`); ``several_datasets``;
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
                "shape": mechanism_shape(numbers),
                "example": Lenient(run.attack.get("example") or {}),
                "top5": top5(run.attack.get("example") or {}),
            }
        )
    models = reference.get("models") or {}
    default = reference.get("default_model")
    return {
        "runs": entries,
        "families": family_shapes(entries),
        "several_datasets": len({e["dataset"] for e in entries}) > 1,
        "shape_max_n_star_frac": SHAPE_MAX_N_STAR_FRAC,
        "shape_min_head_share": SHAPE_MIN_HEAD_SHARE,
        "paper_models": {name: paper_numbers(spec) for name, spec in models.items()},
        "default_model": default,
        "default_label": (models.get(default) or {}).get("label", default),
        "source": reference.get("source", "the paper"),
        "paper_dataset": reference.get("dataset_label", reference.get("dataset")),
        "any_proxy": any(e["proxy"] for e in entries),
        "top_k": top_k,
        "top_n": top_n,
    }
