"""Figure of the inference stage: forbidding the answer (overview)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import (
    KIND_COLORS,
    KIND_LABELS,
    LN10,
    Drawn,
    PathLike,
    _note,
    _save,
    _title,
)


def overview(inference: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "") -> Drawn:
    """Forbidding the answer: answer probabilities and the log10 Bayes factor per pair.

    Left: how much probability the model puts on the correct answer under each prompt
    kind, over the kept facts (those the model knows). Right: the log10 Bayes factor
    lbf_j = (lo(c) - lo(nc_j)) / ln 10 for both pairs of every kept fact, with its mean;
    the total effect of forbidding the answer is minus that mean (paper, Llama-2-7b-chat:
    3.05 log10).

    Args:
        inference: One row per fact and kind with ``fact_id``, ``kind`` ('c', 'nc0',
            'nc1'), ``p_correct``, ``logodds`` (natural log) and ``kept`` (bool).
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    kept = inference[inference["kept"].astype(bool)]
    n_facts = inference["fact_id"].nunique()
    n_kept = kept["fact_id"].nunique()
    fig, (ax_p, ax_b) = plt.subplots(1, 2, figsize=(10, 3.8))

    bins = np.linspace(0.0, 1.0, 21)
    for kind in ("c", "nc0", "nc1"):
        values = kept.loc[kept["kind"] == kind, "p_correct"].to_numpy(dtype=float)
        if len(values):
            ax_p.hist(
                values,
                bins=bins,
                histtype="step",
                linewidth=1.6,
                color=KIND_COLORS[kind],
                label=KIND_LABELS[kind],
            )
    ax_p.set_xlim(0, 1)
    ax_p.set_xlabel("P(correct answer)")
    ax_p.set_ylabel("kept facts")
    ax_p.set_title(f"answer probability ({n_kept} of {n_facts} facts kept)")

    wide = kept.pivot_table(index="fact_id", columns="kind", values="logodds", aggfunc="first")
    lbf = {}
    for pair in ("nc0", "nc1"):
        if {"c", pair} <= set(wide.columns):
            lbf[pair] = ((wide["c"] - wide[pair]) / LN10).to_numpy(dtype=float)
    pooled = np.concatenate(list(lbf.values())) if lbf else np.array([])
    finite = pooled[np.isfinite(pooled)]

    if n_kept == 0 or len(finite) == 0:
        _note(ax_p, "no kept facts")
        _note(ax_b, "no kept facts")
    else:
        ax_p.legend(loc="upper center", fontsize="small")
        edges = np.histogram_bin_edges(finite, bins=30)
        for pair, values in lbf.items():
            values = values[np.isfinite(values)]
            ax_b.hist(
                values,
                bins=edges,
                alpha=0.5,
                color=KIND_COLORS[pair],
                label=f"lbf vs {pair} (n = {len(values)})",
            )
        mean = float(finite.mean())
        ax_b.axvline(
            mean,
            color="black",
            linestyle="--",
            label=f"mean {mean:.2f} \u21d2 total effect {-mean:.2f} log10",
        )
        ax_b.axvline(0.0, color="0.5", linewidth=0.8)
        dropped = len(pooled) - len(finite)
        if dropped:
            ax_b.text(
                0.02,
                0.98,
                f"{dropped} infinite pairs not shown",
                transform=ax_b.transAxes,
                ha="left",
                va="top",
                fontsize="small",
                color="0.4",
            )
        ax_b.legend(loc="upper left", fontsize="small", bbox_to_anchor=(0.0, 0.92))
    ax_b.set_xlabel("log10 Bayes factor lbf = log10 odds(c) \u2212 log10 odds(nc)")
    ax_b.set_ylabel("(fact, pair)s")
    ax_b.set_title("effect of forbidding the answer")
    _title(fig, "Competing vs non-competing prompts", title)
    fig.tight_layout()
    return _save(fig, png, pdf)
