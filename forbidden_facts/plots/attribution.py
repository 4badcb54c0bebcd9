"""Figures of the attribution stage: top components, cumulative patching, independence,
the layer x head heatmap and the suppressive/promotive (Luigi/Waluigi) bars."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from ..artifacts import Attribution as S
from .common import (
    NC_TO_C_LOG10,
    PROMOTIVE_COLOR,
    SUPPRESSIVE_COLOR,
    TYPE_COLORS,
    Drawn,
    PathLike,
    _note,
    _save,
    _title,
    _xerr,
)


def top_components(
    components: pd.DataFrame, png: PathLike, pdf: PathLike, top_n: int = 40, title: str = ""
) -> Drawn:
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
    return _save(fig, png, pdf)


def cumulative(
    curve: pd.DataFrame, summary: Mapping[str, Any], png: PathLike, pdf: PathLike, title: str = ""
) -> Drawn:
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
    total = summary.get(S.total_effect)
    n_star = summary.get(S.n_star)
    k90 = summary.get(S.k_ninety)
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
            label="mean over pairs",
        )
        if total is not None and np.isfinite(total):
            ax.axhline(total, color="black", linestyle="--", label=f"total effect = {total:.2f}")
        if n_star is not None:
            degenerate = " (degenerate)" if summary.get(S.n_star_degenerate) else ""
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
    return _save(fig, png, pdf)


def cumulative_note(summary: Mapping[str, Any]) -> str:
    """Why N* is missing or not comparable, in words for the figure ("" when it is fine)."""
    total = summary.get(S.total_effect)
    if total is None or not np.isfinite(total) or total <= 0:
        return (
            "total effect <= 0: the model does not suppress the forbidden answer;\n"
            "N* and k-shares undefined"
        )
    if summary.get(S.n_star) is None:
        return "N* not reached"
    if summary.get(S.n_star_degenerate):
        reason = summary.get(S.n_star_reason) or "degenerate"
        return f"N* degenerate ({reason});\nread k90"
    return ""


def independence(curve: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "") -> Drawn:
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
    return _save(fig, png, pdf)


def _tick_step(n: int, max_labels: int = 40) -> int:
    return max(1, math.ceil(n / max_labels))


def layer_head_heatmap(
    components: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = ""
) -> Drawn:
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
    return _save(fig, png, pdf)


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
) -> Drawn:
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
    return _save(fig, png, pdf)
