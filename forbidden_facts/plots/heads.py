"""Figures of the heads stage: head statistics by group and an attention pattern."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import (
    KIND_LABELS,
    PROMOTIVE_COLOR,
    Drawn,
    PathLike,
    _escape,
    _note,
    _save,
    _title,
)


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
) -> Drawn:
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
    return _save(fig, png, pdf)


def attention_pattern(
    example: Mapping[str, Any], png: PathLike, pdf: PathLike, title: str = ""
) -> Drawn:
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
    return _save(fig, png, pdf)
