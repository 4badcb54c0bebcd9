"""Figures of the replication, one pure function per figure.

Every function takes tables (pandas), dicts or arrays that the workflow has already
computed, draws one figure and writes it twice, as a PNG (150 dpi) for the Snakemake
report and as a PDF for the paper. Nothing here touches a model: a researcher can
redraw any figure from the artifacts alone. Files are written atomically, so a killed
job never leaves a truncated image behind.

Conventions: effects are shown in log10 (every such axis says so), "nc->c" is the
first-order patching direction that ranks the components (negative = suppressive,
docs/science.md § Patching), and suppression curves flip that sign so that up means more suppression.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .io import atomic_path  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")

PathLike = str | os.PathLike

LN10 = math.log(10.0)
DPI = 150
KIND_LABELS = {
    "c": "c (forbidden = answer)",
    "nc0": "nc0 (forbidden = wrong answer)",
    "nc1": "nc1 (forbidden = irrelevant word)",
}
KIND_COLORS = {"c": "#d62728", "nc0": "#1f77b4", "nc1": "#2ca02c"}
TYPE_COLORS = {"embed": "#7f7f7f", "head": "#1f77b4", "mlp": "#ff7f0e"}
SUPPRESSIVE_COLOR = "#1f77b4"
PROMOTIVE_COLOR = "#d62728"
DYNAMIC_COLOR = "#2ca02c"
ROLE_CHANGED_COLOR = "#d62728"
NC_TO_C_LOG10 = "mean nc\u2192c effect (log10 BF)"


def _save(fig: plt.Figure, png: PathLike, pdf: PathLike) -> None:
    """Write `fig` to `png` and `pdf` atomically and close it.

    The PDF gets no creation date, so that re-running a rule on the same inputs gives
    byte-identical files (the archive and `snakemake --report` do not churn).
    """
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    finally:
        plt.close(fig)


def _title(fig: plt.Figure, name: str, title: str) -> None:
    """Figure title: the figure's name, then the model/dataset if given."""
    fig.suptitle(f"{name} \u2014 {title}" if title else name)


def _note(ax: plt.Axes, text: str) -> None:
    """Write `text` in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _escape(text: str) -> str:
    """Make a token string safe and visible as a tick label (no mathtext, no raw newlines)."""
    text = str(text).replace("\n", "\\n").replace("\t", "\\t").replace("$", r"\$")
    return text if text else "\u2205"


def _xerr(df: pd.DataFrame) -> np.ndarray:
    """Asymmetric error-bar lengths [2, n] from the CI columns; missing CIs draw nothing."""
    lo = (df["mean_log10"] - df["ci_low"]).to_numpy(dtype=float)
    hi = (df["ci_high"] - df["mean_log10"]).to_numpy(dtype=float)
    return np.clip(np.nan_to_num(np.vstack([lo, hi]), nan=0.0), 0.0, None)


def overview(inference: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "") -> None:
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
    _save(fig, png, pdf)


def top_components(
    components: pd.DataFrame, png: PathLike, pdf: PathLike, top_n: int = 40, title: str = ""
) -> None:
    """The `top_n` most suppressive components by rank, with 95% CIs, colored by type.

    Args:
        components: One row per component with ``component``, ``type`` ('embed', 'head',
            'mlp'), ``mean_log10``, ``ci_low``, ``ci_high`` and ``rank`` (0 = most
            suppressive).
        png: Output PNG path.
        pdf: Output PDF path.
        top_n: How many components to show.
        title: Model / dataset name for the figure title.
    """
    top = components.sort_values("rank").head(top_n).reset_index(drop=True)
    n = len(top)
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.22 * max(n, 4)))
    if n == 0:
        _note(ax, "no components")
    else:
        y = np.arange(n)
        colors = [TYPE_COLORS.get(t, "0.5") for t in top["type"]]
        ax.barh(
            y,
            top["mean_log10"].to_numpy(dtype=float),
            xerr=_xerr(top),
            color=colors,
            error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"},
        )
        ax.set_yticks(y, top["component"].astype(str).tolist(), fontsize=7)
        ax.set_ylim(n - 0.5, -0.5)
        present = [t for t in TYPE_COLORS if t in set(top["type"])]
        ax.legend(
            handles=[Patch(color=TYPE_COLORS[t], label=t) for t in present],
            loc="lower right",
            fontsize="small",
        )
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_xlabel(f"{NC_TO_C_LOG10}, 95% CI over facts (negative = suppressive)")
    ax.set_ylabel("component (by rank)")
    _title(fig, f"Top {n} suppressive components", title)
    fig.tight_layout()
    _save(fig, png, pdf)


def cumulative(
    curve: pd.DataFrame, summary: Mapping[str, Any], png: PathLike, pdf: PathLike, title: str = ""
) -> None:
    """Cumulative patching: suppression of the top-k components patched together.

    The y axis is the suppression of the correct answer, -mean log10 BF of the pairs with
    the first k components patched nc->c, with the 2.5-97.5% band over pairs. N* is the
    first k whose suppression exceeds the total effect (paper, 7b: N* = 35).

    Args:
        curve: ``k``, ``mean_log10``, ``q025_log10``, ``q975_log10`` (natural direction:
            negative = suppressive).
        summary: ``total_effect_log10`` (may be <= 0: then N* and k90 are None and the
            figure says the model does not suppress the answer), ``n_star``, ``k90``
            and ``n_star_degenerate``/``n_star_degenerate_reason``.
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    total = summary.get("total_effect_log10")
    n_star = summary.get("n_star")
    k90 = summary.get("k90")
    if len(curve) == 0:
        _note(ax, "empty curve")
    else:
        k = curve["k"].to_numpy()
        suppression = -curve["mean_log10"].to_numpy(dtype=float)
        # Flipping the sign swaps the quantiles: the 97.5% BF is the 2.5% suppression.
        low = -curve["q975_log10"].to_numpy(dtype=float)
        high = -curve["q025_log10"].to_numpy(dtype=float)
        ax.fill_between(
            k, low, high, color=SUPPRESSIVE_COLOR, alpha=0.2, label="2.5\u201397.5% of pairs"
        )
        ax.plot(
            k,
            suppression,
            color=SUPPRESSIVE_COLOR,
            marker="o",
            markersize=2.5,
            label="mean over pairs" + (" (fixed order)" if "mean_log10_dynamic" in curve else ""),
        )
        if "mean_log10_dynamic" in curve:
            # Each pair in its own order (identification.dynamic_order).
            ax.fill_between(
                k,
                -curve["q975_log10_dynamic"].to_numpy(dtype=float),
                -curve["q025_log10_dynamic"].to_numpy(dtype=float),
                color=DYNAMIC_COLOR,
                alpha=0.15,
            )
            n_dyn = summary.get("n_star_dynamic")
            ax.plot(
                k,
                -curve["mean_log10_dynamic"].to_numpy(dtype=float),
                color=DYNAMIC_COLOR,
                linestyle="--",
                label="mean over pairs (each pair's own order)"
                + (f", N* = {int(n_dyn)}" if n_dyn is not None else ""),
            )
        if total is not None and np.isfinite(total):
            ax.axhline(total, color="black", linestyle="--", label=f"total effect = {total:.2f}")
        if n_star is not None:
            degenerate = " (degenerate)" if summary.get("n_star_degenerate") else ""
            ax.axvline(
                n_star,
                color=PROMOTIVE_COLOR,
                linestyle=":",
                label=f"N* = {int(n_star)}{degenerate}",
            )
        if k90 is not None and int(k90) in set(k.tolist()):
            y90 = suppression[list(k).index(int(k90))]
            ax.plot(
                [k90],
                [y90],
                marker="D",
                color="#9467bd",
                markersize=7,
                linestyle="none",
                label=f"k90 = {int(k90)} (90% of total)",
            )
        ax.legend(loc="best", fontsize="small")
        ax.set_xlim(0.5, k.max() + 0.5)
    note = cumulative_note(summary)
    if note:
        ax.text(
            0.02,
            0.98,
            note,
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize="small",
            color="0.3",
            wrap=True,
        )
    ax.set_xlabel("k (top-k components patched together, in rank order)")
    ax.set_ylabel("suppression of the answer (\u2212log10 BF)")
    _title(fig, "Cumulative patching", title)
    fig.tight_layout()
    _save(fig, png, pdf)


def cumulative_note(summary: Mapping[str, Any]) -> str:
    """Why N* is missing or not comparable, in words for the figure ("" when it is fine)."""
    total = summary.get("total_effect_log10")
    if total is None or not np.isfinite(total) or total <= 0:
        return (
            "total effect <= 0: the model does not suppress the forbidden answer;\n"
            "N* and k-shares undefined"
        )
    if summary.get("n_star") is None:
        return "N* not reached"
    if summary.get("n_star_degenerate"):
        reason = summary.get("n_star_degenerate_reason") or "degenerate"
        return f"N* degenerate ({reason});\nread k90"
    return ""


def independence(curve: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "") -> None:
    """Independence check: patching the top-k together vs the sum of their single effects.

    If the components acted independently (and first-order patching were additive in
    log-odds) the two lines would coincide; a gap shows interaction between components.

    Args:
        curve: ``k``, ``mean_log10`` and ``sum_of_singles_log10`` (negative = suppressive).
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(curve) == 0:
        _note(ax, "empty curve")
    else:
        k = curve["k"].to_numpy()
        ax.plot(
            k,
            -curve["mean_log10"].to_numpy(dtype=float),
            color=SUPPRESSIVE_COLOR,
            marker="o",
            markersize=2.5,
            label="top-k patched together",
        )
        ax.plot(
            k,
            -curve["sum_of_singles_log10"].to_numpy(dtype=float),
            color="#ff7f0e",
            linestyle="--",
            marker="s",
            markersize=2.5,
            label="sum of single-component effects",
        )
        ax.legend(loc="lower right", fontsize="small")
        ax.set_xlim(0.5, k.max() + 0.5)
    ax.set_xlabel("k (top-k components, in rank order)")
    ax.set_ylabel("suppression of the answer (\u2212log10 BF)")
    _title(fig, "Independence of the suppressive components", title)
    fig.tight_layout()
    _save(fig, png, pdf)


def _tick_step(n: int, max_labels: int = 40) -> int:
    return max(1, math.ceil(n / max_labels))


def layer_head_heatmap(
    components: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = ""
) -> None:
    """Mean nc->c effect (log10) of every head and MLP, layers as rows.

    The MLP of each layer is the last column, behind a separator; the embedding's value
    is given in the title. The colormap is centred at 0: red = suppressive, blue = promotive.

    Args:
        components: ``type``, ``layer``, ``head`` (nullable) and ``mean_log10``.
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    heads = components[components["type"] == "head"]
    mlps = components[components["type"] == "mlp"]
    embed = components[components["type"] == "embed"]
    layers = pd.concat([heads["layer"], mlps["layer"]]).dropna().astype(int)
    n_layers = int(layers.max()) + 1 if len(layers) else 0
    n_heads = int(heads["head"].dropna().astype(int).max()) + 1 if len(heads) else 0

    grid = np.full((n_layers, n_heads + 1), np.nan)
    for layer, head, value in zip(heads["layer"], heads["head"], heads["mean_log10"], strict=True):
        grid[int(layer), int(head)] = value
    for layer, value in zip(mlps["layer"], mlps["mean_log10"], strict=True):
        grid[int(layer), n_heads] = value

    fig, ax = plt.subplots(figsize=(min(3 + 0.3 * (n_heads + 1), 18), min(2 + 0.28 * n_layers, 20)))
    if n_layers == 0:
        _note(ax, "no heads or MLPs")
    else:
        vmax = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
        vmax = vmax if vmax > 0 else 1.0
        image = ax.imshow(
            np.ma.masked_invalid(grid),
            cmap="RdBu",
            vmin=-vmax,
            vmax=vmax,
            aspect="auto",
            interpolation="nearest",
        )
        ax.grid(False)
        ax.axvline(n_heads - 0.5, color="black", linewidth=1.2)
        xstep = _tick_step(n_heads)
        xticks = list(range(0, n_heads, xstep)) + [n_heads]
        ax.set_xticks(xticks, [str(h) for h in xticks[:-1]] + ["MLP"], fontsize=7)
        ystep = _tick_step(n_layers)
        ax.set_yticks(
            range(0, n_layers, ystep), [str(i) for i in range(0, n_layers, ystep)], fontsize=7
        )
        bar = fig.colorbar(image, ax=ax, shrink=0.9)
        bar.set_label(f"{NC_TO_C_LOG10}\n(negative = suppressive)")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    name = "Per-component effect"
    if len(embed):
        name += f" (EMBED: {float(embed['mean_log10'].iloc[0]):+.3f} log10)"
    _title(fig, name, title)
    fig.tight_layout()
    _save(fig, png, pdf)


def _signed_bars(ax: plt.Axes, df: pd.DataFrame, color: str, empty: str) -> None:
    """Horizontal bars with CIs; significant ones solid and starred, the rest faded."""
    if len(df) == 0:
        _note(ax, empty)
        ax.set_yticks([])
        return
    n = len(df)
    y = np.arange(n)
    means = df["mean_log10"].to_numpy(dtype=float)
    significant = (df["role"] != "neutral").to_numpy()
    ax.barh(
        y,
        means,
        xerr=_xerr(df),
        color=[color if s else "none" for s in significant],
        edgecolor=color,
        linewidth=0.8,
        error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "0.2"},
    )
    labels = [f"{c} *" if s else str(c) for c, s in zip(df["component"], significant, strict=True)]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_ylim(n - 0.5, -0.5)
    ax.axvline(0.0, color="0.3", linewidth=0.8)


def luigi_waluigi(
    components: pd.DataFrame, png: PathLike, pdf: PathLike, top_n: int = 40, title: str = ""
) -> None:
    """The most suppressive ("Luigi") and most promotive ("Waluigi") components.

    Left, the `top_n` most negative mean nc->c effects; right, the `top_n` most positive
    (fewer if fewer are positive); effects within float noise are left out. Filled,
    starred bars: the 95% CI over facts excludes 0.

    Args:
        components: ``component``, ``mean_log10``, ``ci_low``, ``ci_high`` and ``role``
            ('suppressive', 'promotive', 'neutral').
        png: Output PNG path.
        pdf: Output PDF path.
        top_n: How many of each kind to show.
        title: Model / dataset name for the figure title.
    """
    # Effects within float noise (EMBED at the last position) are neither kind.
    real = components
    if "within_noise" in components:
        real = components[~components["within_noise"].astype(bool)]
    neg = real[real["mean_log10"] < 0].nsmallest(top_n, "mean_log10")
    pos = real[real["mean_log10"] > 0].nlargest(top_n, "mean_log10")
    n_sig_neg = int((components["role"] == "suppressive").sum())
    n_sig_pos = int((components["role"] == "promotive").sum())
    rows = max(len(neg), len(pos), 4)
    fig, (ax_n, ax_p) = plt.subplots(1, 2, figsize=(10, 1.4 + 0.22 * rows))
    _signed_bars(ax_n, neg, SUPPRESSIVE_COLOR, "no suppressive components")
    _signed_bars(ax_p, pos, PROMOTIVE_COLOR, "no promotive components")
    ax_n.set_title(f"suppressive (top {len(neg)}; {n_sig_neg} significant)")
    ax_p.set_title(f"promotive (top {len(pos)}; {n_sig_pos} significant)")
    for ax in (ax_n, ax_p):
        ax.set_xlabel(f"{NC_TO_C_LOG10}, 95% CI over facts")
    handles = [
        Patch(facecolor="0.4", edgecolor="0.4", label="* 95% CI excludes 0"),
        Patch(facecolor="none", edgecolor="0.4", label="not significant"),
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=2, fontsize="small", bbox_to_anchor=(0.5, 0.0)
    )
    _title(fig, "Luigi (suppressive) vs Waluigi (promotive) components", title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, png, pdf)


def _group_panel(ax: plt.Axes, data: pd.DataFrame, column: str, order: list[str], fmt: str) -> None:
    """Box + jittered points of `column` by group; the black bar and tick label give the mean."""
    data = data[np.isfinite(data[column].to_numpy(dtype=float))]
    if len(data) == 0:
        _note(ax, "no values")
        return
    # matplotlib directly: seaborn 0.13's boxplot passes `vert`, deprecated in matplotlib 3.11.
    colors = [PROMOTIVE_COLOR, "0.55"]
    rng = np.random.default_rng(0)
    for i, group in enumerate(order):
        values = data.loc[data["group"] == group, column].to_numpy(dtype=float)
        if len(values) == 0:
            continue
        box = ax.boxplot(
            [values],
            positions=[i],
            widths=0.5,
            showfliers=False,
            patch_artist=True,
            manage_ticks=False,
            medianprops={"color": colors[i], "linewidth": 1.0},
        )
        for patch in box["boxes"]:
            patch.set(facecolor=colors[i], alpha=0.3)
        ax.scatter(
            i + rng.uniform(-0.18, 0.18, len(values)),
            values,
            s=10,
            color=colors[i],
            alpha=0.8,
            zorder=3,
        )
    labels = []
    for i, group in enumerate(order):
        values = data.loc[data["group"] == group, column]
        if len(values):
            mean = float(values.mean())
            ax.plot([i - 0.3, i + 0.3], [mean, mean], color="black", linewidth=1.5)
            labels.append(f"{group}\nmean {mean:{fmt}} (n = {len(values)})")
        else:
            labels.append(f"{group}\n(none)")
    ax.set_xticks(range(len(order)), labels)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_xlabel("")


def head_statistics(
    heads: pd.DataFrame, top_labels: Sequence[str], png: PathLike, pdf: PathLike, title: str = ""
) -> None:
    """OV suppression score and forbidden-word attention: top suppressor heads vs the rest.

    Paper (Llama-2-7b-chat): top-10 heads' OV score mean -1.22 vs +0.12 for the rest;
    forbidden-word attention in c prompts 0.196 vs 0.0086.

    Args:
        heads: One row per head with ``component``, ``ov_score`` (log10) and
            ``attn_forbidden_c``.
        top_labels: The top suppressor heads (labels such as ``L18H9ATN``).
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    top_set = set(top_labels)
    n_top = int(heads["component"].isin(top_set).sum())
    order = [f"top {n_top} heads", "other heads"]
    data = heads.assign(group=np.where(heads["component"].isin(top_set), order[0], order[1]))
    fig, (ax_ov, ax_at) = plt.subplots(1, 2, figsize=(9, 4))
    _group_panel(ax_ov, data, "ov_score", order, "+.2f")
    ax_ov.axhline(0.0, color="0.3", linewidth=0.8)
    ax_ov.set_ylabel("OV suppression score (log10 odds, diagonal \u2212 off-diagonal)")
    ax_ov.set_title("OV circuit: does the head suppress what it attends to?")
    _group_panel(ax_at, data, "attn_forbidden_c", order, ".3f")
    ax_at.set_ylabel("attention from last position to the forbidden word")
    ax_at.set_title("attention to the forbidden word (c prompts)")
    _title(fig, "Suppressor heads", title)
    fig.tight_layout()
    _save(fig, png, pdf)


def attention_pattern(
    example: Mapping[str, Any], png: PathLike, pdf: PathLike, title: str = ""
) -> None:
    """Attention from the last position of one fact's c and nc1 prompts, per head.

    Args:
        example: ``fact_id``, ``heads`` (k labels), ``tokens_c`` and ``attn_c``
            ([k, len(tokens_c)]), and likewise ``tokens_nc1`` and ``attn_nc1``.
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
    """
    heads = [str(h) for h in example.get("heads", [])]
    kinds = ("c", "nc1")
    attn = {}
    for kind in kinds:
        tokens = list(example.get(f"tokens_{kind}", []))
        attn[kind] = np.asarray(example.get(f"attn_{kind}", []), dtype=float).reshape(
            len(heads), len(tokens)
        )
    n_tok = max(len(example.get(f"tokens_{kind}", [])) for kind in kinds)
    vmax = max((float(a.max()) for a in attn.values() if a.size), default=1.0) or 1.0
    width = min(max(8.0, 2.0 + 0.13 * n_tok), 30.0)
    height_one = 1.6 + 0.25 * max(len(heads), 1)
    fontsize = 7 if n_tok <= 48 else 5
    fig, axes = plt.subplots(
        2, 1, figsize=(width, 2 * height_one + 2.5), squeeze=False, layout="constrained"
    )
    image = None
    for ax, kind in zip(axes[:, 0], kinds, strict=True):
        tokens = [_escape(t) for t in example.get(f"tokens_{kind}", [])]
        if attn[kind].size == 0:
            _note(ax, "no heads" if not heads else "no tokens")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            image = ax.imshow(
                attn[kind],
                cmap="viridis",
                vmin=0.0,
                vmax=vmax,
                aspect="auto",
                interpolation="nearest",
            )
            ax.grid(False)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=fontsize)
            ax.set_yticks(range(len(heads)), heads, fontsize=7)
        ax.set_title(f"{KIND_LABELS[kind]} prompt", fontsize=9)
        ax.set_ylabel("head")
    if image is not None:
        bar = fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8)
        bar.set_label("attention from last position")
    _title(fig, f"Attention pattern, fact {example.get('fact_id', '?')}", title)
    _save(fig, png, pdf)


def attack_vs_control(attack: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "") -> None:
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
    _save(fig, png, pdf)


def attack_tokens(
    tokens: pd.DataFrame, png: PathLike, pdf: PathLike, top_n: int = 10, title: str = ""
) -> None:
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
    _save(fig, png, pdf)


def component_shift(
    shift: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "", base: str = ""
) -> None:
    """Each component's effect before (the base model) and after, on the same facts.

    One point per component: x its mean nc->c log10 BF in the base model, y in the
    derived model, with the 95% intervals over facts as error bars. Points off the
    diagonal changed; components whose role changed (suppressive, promotive, neutral)
    are drawn in red and the largest of them named.

    Args:
        shift: The table of `shift.component_shift` (``before_`` / ``after_``
            ``mean_log10``, ``ci_low``, ``ci_high``, ``role_changed``, ``component``).
        png: Output PNG path.
        pdf: Output PDF path.
        title: Model / dataset name for the figure title.
        base: The base model's name, for the x label.
    """
    fig, ax = plt.subplots(figsize=(6, 6))
    if len(shift) == 0:
        _note(ax, "no components")
    else:
        changed = shift["role_changed"].astype(bool).to_numpy()
        for mask, color, label, z in (
            (~changed, "0.55", "same role", 2),
            (changed, ROLE_CHANGED_COLOR, f"role changed ({int(changed.sum())})", 3),
        ):
            part = shift[mask]
            if not len(part):
                continue
            ax.errorbar(
                part["before_mean_log10"],
                part["after_mean_log10"],
                xerr=_shift_err(part, "before"),
                yerr=_shift_err(part, "after"),
                fmt="o",
                markersize=3,
                color=color,
                ecolor=color,
                elinewidth=0.6,
                alpha=0.8,
                label=label,
                zorder=z,
            )
        lo = float(np.nanmin(shift[["before_ci_low", "after_ci_low"]].to_numpy(dtype=float)))
        hi = float(np.nanmax(shift[["before_ci_high", "after_ci_high"]].to_numpy(dtype=float)))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            lo = float(shift[["before_mean_log10", "after_mean_log10"]].min().min())
            hi = float(shift[["before_mean_log10", "after_mean_log10"]].max().max())
        pad = 0.05 * max(hi - lo, 1e-6)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", lw=0.8, ls="--")
        ax.axhline(0, color="0.7", lw=0.6)
        ax.axvline(0, color="0.7", lw=0.6)
        named = shift[changed].head(8)
        for row in named.itertuples():
            ax.annotate(
                row.component,
                (row.before_mean_log10, row.after_mean_log10),
                fontsize="x-small",
                xytext=(3, 3),
                textcoords="offset points",
                color=ROLE_CHANGED_COLOR,
            )
        ax.legend(loc="upper left", fontsize="small")
    ax.set_xlabel(f"before{f' ({base})' if base else ''}: {NC_TO_C_LOG10}")
    ax.set_ylabel(f"after: {NC_TO_C_LOG10}")
    _title(fig, "Per-component effect before and after", title)
    fig.tight_layout()
    _save(fig, png, pdf)


def _shift_err(df: pd.DataFrame, side: str) -> np.ndarray:
    renamed = df.rename(
        columns={
            f"{side}_mean_log10": "mean_log10",
            f"{side}_ci_low": "ci_low",
            f"{side}_ci_high": "ci_high",
        }
    )
    return _xerr(renamed)
