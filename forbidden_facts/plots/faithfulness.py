"""Figures of the faithfulness stage: circuit curves with recomputation beside the
first-order cumulative curve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..artifacts import Faithfulness as F
from .common import (
    PROMOTIVE_COLOR,
    SUPPRESSIVE_COLOR,
    Drawn,
    PathLike,
    _note,
    _save,
    _title,
)

FIRST_ORDER_COLOR = "0.45"
NECESSITY_COLOR = "#ff7f0e"


def circuit_curves(
    curve: pd.DataFrame, summary: Mapping[str, Any], png: PathLike, pdf: PathLike, title: str = ""
) -> Drawn:
    """Sufficiency and necessity of the top-k circuit with recomputation, and first order.

    The y axis is suppression of the answer (-log10 BF, up = more): the top-k components
    patched nc->c together with every later layer recomputed (sufficiency), every
    component except the top-k patched (necessity: what the rest still does), and the
    first-order cumulative curve of the same components. Bands are 95% t-intervals over
    facts; the dashed line is the total effect (every component patched).

    Args:
        curve: faithfulness_curve.parquet (`artifacts.FAITHFULNESS_CURVE_COLUMNS`).
        summary: faithfulness.json (N*, k90 recomputed).
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(curve) == 0:
        _note(ax, "no components")
    else:
        k = curve["k"].to_numpy()

        def band(name, color, label, marker="o"):
            y = -curve[f"{name}_log10"].to_numpy(dtype=float)
            low = -curve[f"{name}_high"].to_numpy(dtype=float)
            high = -curve[f"{name}_low"].to_numpy(dtype=float)
            ax.fill_between(k, low, high, color=color, alpha=0.18)
            ax.plot(k, y, color=color, marker=marker, markersize=2.5, label=label)

        band("sufficiency", SUPPRESSIVE_COLOR, "top-k patched, recomputed (sufficiency)")
        band("necessity", NECESSITY_COLOR, "all but the top-k, recomputed (necessity)", "s")
        first = -curve["first_order_log10"].to_numpy(dtype=float)
        if np.isfinite(first).any():
            ax.plot(k, first, color=FIRST_ORDER_COLOR, linestyle="-.", label="top-k, first order")
        total = float(-curve["all_patched_log10"].iloc[0])
        if np.isfinite(total):
            ax.axhline(total, color="black", linestyle="--", label=f"total effect = {total:.2f}")
        n_star = summary.get(F.n_star)
        if n_star is not None and n_star <= k.max():
            share = summary.get(F.recomputed_share)
            text = f", {share:.0%} recomputed" if share is not None else ""
            ax.axvline(
                n_star, color=PROMOTIVE_COLOR, linestyle=":", label=f"N* = {int(n_star)}{text}"
            )
        ax.axhline(0, color="0.7", linewidth=0.8)
        ax.legend(loc="best", fontsize="small")
        ax.set_xlim(0.5, k.max() + 0.5)
    ax.set_xlabel("k (top-k components by first-order rank)")
    ax.set_ylabel("suppression of the answer (\u2212log10 BF)")
    _title(fig, "Circuit curves with recomputation", title)
    fig.tight_layout()
    return _save(fig, png, pdf)


def attack_prediction(
    prediction: pd.DataFrame,
    summary: Mapping[str, Any],
    png: PathLike,
    pdf: PathLike,
    title: str = "",
) -> Drawn:
    """When the self-insertion attack works: its effect per fact against the predictor.

    x: the predictor (attention of the top suppressor heads on the inserted answer times
    their first-order effect on the fact, log10); y: the attack's change of the answer's
    log-odds (log10). Facts whose top-1 answer the attack flips are marked apart.

    Args:
        prediction: attack_prediction.parquet (`artifacts.ATTACK_PREDICTION_COLUMNS`).
        summary: faithfulness.json (``attack_spearman``, its interval, ``attack_auc``).
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    fig, ax = plt.subplots(figsize=(6, 4.2))
    if len(prediction) == 0:
        _note(ax, "no attacked facts")
    else:
        flipped = prediction["flipped"].to_numpy(bool)
        x = prediction["predictor_log10"].to_numpy(float)
        y = prediction["delta_logodds_log10"].to_numpy(float)
        ax.scatter(
            x[~flipped], y[~flipped], color=SUPPRESSIVE_COLOR, s=18, label="top-1 answer kept"
        )
        ax.scatter(
            x[flipped], y[flipped], color=PROMOTIVE_COLOR, marker="x", s=28, label="top-1 flipped"
        )
        ax.axhline(0, color="0.7", linewidth=0.8)
        ax.legend(loc="best", fontsize="small")
        rho, auc = summary.get(F.attack_spearman), summary.get(F.attack_auc)
        low, high = (summary.get(F.attack_spearman_ci) or [None, None])[:2]
        text = "Spearman " + (f"{rho:.2f}" if rho is not None else "n/a")
        if low is not None and high is not None:
            text += f" [{low:.2f}, {high:.2f}]"
        text += ", AUC (flip) " + (f"{auc:.2f}" if auc is not None else "n/a")
        ax.text(0.02, 0.02, text, transform=ax.transAxes, fontsize="small", color="0.3")
    ax.set_xlabel(
        "predictor: top heads' attention on the inserted answer \u00d7 their effect (log10)"
    )
    ax.set_ylabel("attack's change of the answer's log-odds (log10)")
    _title(fig, "When does the self-insertion attack work?", title)
    fig.tight_layout()
    return _save(fig, png, pdf)
