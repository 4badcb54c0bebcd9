"""What every figure shares: the theme, colours, labels and the atomic save."""

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..io import atomic_path

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
