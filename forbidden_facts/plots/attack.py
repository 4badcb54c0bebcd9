"""Figures of the attack stage: attack against control, and the best attack tokens."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import (
    PROMOTIVE_COLOR,
    SUPPRESSIVE_COLOR,
    Drawn,
    PathLike,
    _escape,
    _note,
    _save,
    _title,
)


def attack_vs_control(attack: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "") -> Drawn:
    """Self-insertion attack vs control: change in the correct answer's log10 odds.

    The attack inserts "from {answer}" after "assistant" in the nc1 prompt; the control
    inserts an unrelated word (paper's California attack: P(California) 95% -> 15%).

    Args:
        attack: ``fact_id``, ``variant`` ('attack' or 'control'), ``p_before``,
            ``p_after``, ``top1_before``, ``top1_after`` and ``delta_logodds_log10``.
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    colors = {"attack": PROMOTIVE_COLOR, "control": "0.45"}
    fig, (ax_d, ax_p) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    deltas = attack["delta_logodds_log10"].to_numpy(dtype=float)
    finite = deltas[np.isfinite(deltas)]
    if len(finite) == 0:
        _note(ax_d, "no attacked facts")
        _note(ax_p, "no attacked facts")
    else:
        edges = np.histogram_bin_edges(finite, bins=30)
        for variant in ("control", "attack"):
            rows = attack[attack["variant"] == variant]
            values = rows["delta_logodds_log10"].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if len(values) == 0:
                continue
            flipped = float((rows["top1_after"] != rows["top1_before"]).mean())
            ax_d.hist(
                values,
                bins=edges,
                alpha=0.45,
                color=colors[variant],
                label=f"{variant} (n = {len(values)}, top-1 changed {flipped:.0%})",
            )
            ax_d.axvline(
                values.mean(),
                color=colors[variant],
                linestyle="--",
                linewidth=1.5,
                label=f"{variant} mean = {values.mean():+.2f}",
            )
            ax_p.scatter(
                rows["p_before"],
                rows["p_after"],
                s=8,
                alpha=0.6,
                color=colors[variant],
                label=variant,
            )
        ax_d.axvline(0.0, color="0.3", linewidth=0.8)
        ax_d.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small")
        ax_p.plot([0, 1], [0, 1], color="0.3", linewidth=0.8, linestyle=":")
        ax_p.legend(loc="upper left", fontsize="small")
    ax_d.set_xlabel("change in log10 odds of the correct answer")
    ax_d.set_ylabel("facts")
    ax_p.set_xlim(0, 1)
    ax_p.set_ylim(0, 1)
    ax_p.set_xlabel("P(correct) before insertion")
    ax_p.set_ylabel("P(correct) after insertion")
    _title(fig, "Self-insertion attack vs control", title)
    fig.tight_layout()
    return _save(fig, png, pdf)


def attack_tokens(
    tokens: pd.DataFrame, png: PathLike, pdf: PathLike, top_n: int = 10, title: str = ""
) -> Drawn:
    """Best attack tokens per suppressor head: most attended, with their effect.

    One panel per head: the `top_n` tokens with the highest mean attention over facts
    when placed in the attack slot, each annotated with the mean change in the correct
    answer's log10 odds (negative = the attack works).

    Args:
        tokens: ``component``, ``fact_id``, ``token``, ``attention`` and
            ``delta_logodds_log10``.
        png: Output PNG path.
        pdf: Output PDF path.
        top_n: Tokens per head.
        title: Model / dataset name for the figure title.
    """
    components = list(dict.fromkeys(tokens["component"]))
    n = max(len(components), 1)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 0.8 + nrows * (0.9 + 0.24 * top_n)), squeeze=False
    )
    if not components:
        _note(axes[0, 0], "no attack tokens")
    for ax, component in zip(axes.flat, components, strict=False):
        best = (
            tokens[tokens["component"] == component]
            .groupby("token", sort=False)[["attention", "delta_logodds_log10"]]
            .mean()
            .nlargest(top_n, "attention")
        )
        y = np.arange(len(best))
        ax.barh(y, best["attention"], color=SUPPRESSIVE_COLOR)
        ax.set_yticks(y, [f"'{_escape(t)}'" for t in best.index], fontsize=7)
        ax.set_ylim(len(best) - 0.5, -0.5)
        xmax = float(best["attention"].max()) if len(best) else 1.0
        ax.set_xlim(0, (xmax or 1.0) * 1.45)
        for yi, (att, delta) in enumerate(
            zip(best["attention"], best["delta_logodds_log10"], strict=True)
        ):
            ax.annotate(
                f"{delta:+.2f}",
                (att, yi),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.set_title(str(component), fontsize=9)
        ax.set_xlabel("mean attention from last position", fontsize=8)
    for ax in list(axes.flat)[len(components) :]:
        if components:
            ax.set_visible(False)
    fig.text(
        0.5,
        0.0,
        "numbers: mean change in log10 odds of the correct answer",
        ha="center",
        va="bottom",
        fontsize=8,
    )
    _title(fig, "Attack tokens per suppressor head", title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, png, pdf)
