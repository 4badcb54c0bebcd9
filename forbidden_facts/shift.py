"""What a fine-tune did to each component: its effect before and after, on the same facts.

A model derived from another (config ``models.<name>.base``) is compared with its base
by first-order patching both on the derived model's kept facts and prompts (first-order
patching needs no kept filter, so the base can be measured where it does not obey). For
every component this gives the mean nc->c log10 Bayes factor before (the base) and after
(the derived model) with its 95% interval over facts, each role (suppressive, promotive,
neutral; float noise is neutral) as `identification.rank_components` assigns it, and the
change after - before with a paired interval: each fact's change is the difference of its
own two means, so the interval is a t-interval over facts of those differences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .artifacts import ComponentShift as CS
from .identification import rank_components
from .intervals import fact_means, t_interval
from .units import to_log10

ROLE_COLUMNS = ("mean_log10", "ci_low", "ci_high", "role", "rank", "within_noise")


def component_shift(
    before: pd.DataFrame,
    after: pd.DataFrame,
    tolerance_before: float = 0.0,
    tolerance_after: float = 0.0,
    label_order: list[str] | None = None,
) -> pd.DataFrame:
    """Per component: effect before and after on the same facts, the change and role changes.

    Args:
        before: Attribution of the base model (long table with ``fact_id``, ``pair``,
            ``direction``, ``component``, ``delta_logodds`` in natural log).
        after: Attribution of the derived model, on the same facts and components.
        tolerance_before: Float-noise tolerance (natural log-odds) of the base model's run
            (`identification.noise_tolerance`).
        tolerance_after: The same for the derived model.
        label_order: Residual order of the labels (ties are broken by it); defaults to the
            order of `after`.

    Returns:
        One row per component: ``component``, ``layer``, ``head``, ``type``, for
        ``before_`` and ``after_`` each ``mean_log10``, ``ci_low``, ``ci_high``, ``role``,
        ``rank``, ``within_noise``; then ``change_log10`` (after - before), its paired
        95% interval over facts ``change_ci_low`` / ``change_ci_high``,
        ``change_significant`` (the interval excludes 0), ``role_changed`` and
        ``n_facts``. Rows whose role changed come first, then by |change| (largest
        first), then by the derived model's rank.

    Raises:
        ValueError: When the two tables do not cover the same facts and components.

    Example:
        A component that suppresses after the fine-tune and promoted before is listed
        first with ``role_changed`` true and a negative ``change_log10``.
    """
    labels = label_order or list(dict.fromkeys(after["component"]))
    _check_same(before, after)
    ranked = {
        "before": rank_components(before, labels, tolerance=tolerance_before),
        "after": rank_components(after, labels, tolerance=tolerance_after),
    }
    table = ranked["after"][["component", "layer", "head", "type"]].copy()
    for name, frame in ranked.items():
        part = frame.set_index("component")[list(ROLE_COLUMNS)].reindex(table["component"])
        for col in ROLE_COLUMNS:
            table[f"{name}_{col}"] = part[col].to_numpy()
    per_before = fact_means(before).reindex(columns=table["component"])
    per_after = fact_means(after).reindex(columns=table["component"])
    # Paired by fact: row f of the difference is fact f's own change.
    diff = to_log10((per_after - per_before.reindex(per_after.index)).to_numpy())
    mean_f, low, high = t_interval(diff)
    change = table["after_mean_log10"].to_numpy() - table["before_mean_log10"].to_numpy()
    table["change_log10"] = change
    # Every fact has both pairs, so the mean over pairs equals the mean over facts; the
    # half-width is the facts' (as in rank_components).
    table["change_ci_low"] = change - (mean_f - low)
    table["change_ci_high"] = change + (high - mean_f)
    table["change_significant"] = (table["change_ci_low"] > 0) | (table["change_ci_high"] < 0)
    table["role_changed"] = table["before_role"] != table["after_role"]
    table["n_facts"] = int(per_after.shape[0])
    table["_abs"] = np.abs(change)
    table = table.sort_values(
        ["role_changed", "_abs", "after_rank"], ascending=[False, False, True], kind="mergesort"
    )
    return table.drop(columns="_abs").reset_index(drop=True)


def _check_same(before: pd.DataFrame, after: pd.DataFrame) -> None:
    for what in ("fact_id", "component"):
        b, a = set(before[what]), set(after[what])
        if b != a:
            only_b, only_a = sorted(b - a)[:3], sorted(a - b)[:3]
            raise ValueError(
                f"component_shift: the base and the derived model's attributions cover "
                f"different {what}s ({len(b)} vs {len(a)}; only in the base: {only_b}, only "
                f"in the derived model: {only_a}). Both must be run on the derived model's "
                "kept facts with the same architecture; rerun the base_attribution rules."
            )


def shift_summary(table: pd.DataFrame) -> dict:
    """Counts of the shift table: role changes, by kind, and significant changes."""
    changed = table[table["role_changed"]]
    kinds = (changed["before_role"] + "->" + changed["after_role"]).value_counts()
    return {
        CS.n_components: int(len(table)),
        CS.n_facts: int(table["n_facts"].iloc[0]) if len(table) else 0,
        CS.n_role_changed: int(len(changed)),
        CS.role_changes: {k: int(v) for k, v in kinds.items()},
        CS.n_change_significant: int(table["change_significant"].sum()),
        CS.role_changed_components: changed["component"].tolist(),
    }


# Rows of the paper's table per run: the role changes first, then the largest changes.
PAPER_ROWS = 25


def paper_context(runs: list[dict], figure: str | None, max_rows: int = PAPER_ROWS) -> dict:
    """The context of paper/templates/component_shift.tex.j2.

    Args:
        runs: One dict per (derived model, dataset) with ``model``, ``base``, ``dataset``,
            ``summary`` (component_shift.json) and ``table`` (component_shift.parquet).
        figure: The staged figure's path (``figures/component_shift.pdf``) shown with the
            first run, or None for no figure.
        max_rows: Rows of each table.

    Returns:
        ``{"shifts": [...]}``, empty when no model has a base (the paper then has no
        comparison section).
    """
    from .tables import records
    from .tables_latex import latex_escape, run_slug

    shifts = []
    for i, run in enumerate(runs):
        summary = run["summary"]
        changes = ", ".join(
            f"{latex_escape(kind.split('->')[0])} $\\to$ {latex_escape(kind.split('->')[1])}: {n}"
            for kind, n in summary["role_changes"].items()
        )
        shifts.append(
            {
                "model": run["model"],
                "base": run["base"],
                "dataset": run["dataset"],
                "slug": run_slug(run),
                "summary": summary,
                "changes": changes,
                "rows": records(run["table"].head(max_rows)),
                "figure": figure if i == 0 else None,
            }
        )
    return {"shifts": shifts}
