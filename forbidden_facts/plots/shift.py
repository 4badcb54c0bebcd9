"""Figure of the comparison stage: each component's effect before and after a fine-tune."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .common import (
    NC_TO_C_LOG10,
    ROLE_CHANGED_COLOR,
    Drawn,
    PathLike,
    _note,
    _save,
    _title,
    _xerr,
)


def component_shift(
    shift: pd.DataFrame, png: PathLike, pdf: PathLike, title: str = "", base: str = ""
) -> Drawn:
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
    return _save(fig, png, pdf)


def _shift_err(df: pd.DataFrame, side: str) -> np.ndarray:
    renamed = df.rename(
        columns={
            f"{side}_mean_log10": "mean_log10",
            f"{side}_ci_low": "ci_low",
            f"{side}_ci_high": "ci_high",
        }
    )
    return _xerr(renamed)
