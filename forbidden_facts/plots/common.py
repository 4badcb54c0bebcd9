"""What every figure shares: the theme, colours, labels and the atomic save."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..io import atomic_path
from ..units import LN10  # noqa: F401 (re-exported for the figure modules)

sns.set_theme(style="whitegrid", context="paper")

PathLike = str | os.PathLike

DPI = 150
KIND_LABELS = {
    "c": "c (forbidden = answer)",
    "nc0": "nc0 (forbidden = wrong answer)",
    "nc1": "nc1 (forbidden = irrelevant word)",
}
KIND_COLORS = {"c": "#d62728", "nc0": "#1f77b4", "nc1": "#2ca02c"}
TYPE_COLORS = {"embed": "#7f7f7f", "head": "#1f77b4", "attn_bias": "#2ca02c", "mlp": "#ff7f0e"}
SUPPRESSIVE_COLOR = "#1f77b4"
PROMOTIVE_COLOR = "#d62728"
NC_TO_C_LOG10 = "mean nc\u2192c effect (log10 BF)"


@dataclass
class Panel:
    """What one axes of a figure draws, read back from matplotlib's artists.

    Attributes:
        title: The axes title.
        xlabel: The x-axis label.
        ylabel: The y-axis label.
        bars: Bar groups (``bar``, ``barh``, filled ``hist``) by label (matplotlib's
            ``_container<i>`` where none is given): ``[n_bars, 4]`` rows of x, y,
            width, height.
        lines: Lines (``plot``, ``axhline``, ``axvline``) by label (``_child<i>``
            where none is given): ``[n_points, 2]`` x, y.
        steps: Outlines of step histograms by label: ``[n_points, 2]`` x, y.
        points: Scatter points by label: ``[n_points, 2]`` x, y.
        images: Arrays shown with ``imshow`` (masked cells as NaN).
        yticklabels: The y tick labels, top to bottom as drawn.
        texts: Text written in the axes (notes, annotations).
    """

    title: str
    xlabel: str
    ylabel: str
    bars: dict[str, np.ndarray] = field(default_factory=dict)
    lines: dict[str, np.ndarray] = field(default_factory=dict)
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    points: dict[str, np.ndarray] = field(default_factory=dict)
    images: list[np.ndarray] = field(default_factory=list)
    yticklabels: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


@dataclass
class Drawn:
    """The data a figure function drew: its title and one :class:`Panel` per axes."""

    title: str
    panels: list[Panel]

    def panel(self, title_start: str = "") -> Panel:
        """The panel whose title starts with `title_start` (the only panel by default)."""
        found = [p for p in self.panels if p.title.startswith(title_start)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} panels titled {title_start!r}* in {self.title!r}")
        return found[0]


def drawn(fig: plt.Figure) -> Drawn:
    """Read back what `fig` draws (see :class:`Panel`): for tests and for checking by eye."""
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer
    from matplotlib.patches import Polygon

    panels = []
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        panel = Panel(ax.get_title(), ax.get_xlabel(), ax.get_ylabel())
        for i, container in enumerate(c for c in ax.containers if isinstance(c, BarContainer)):
            label = container.get_label() or f"_container{i}"
            if label.startswith("_") and len(container) and container[0].get_label()[:1] != "_":
                label = container[0].get_label()  # hist labels its first bar
            panel.bars[label] = np.array(
                [[r.get_x(), r.get_y(), r.get_width(), r.get_height()] for r in container],
                dtype=float,
            ).reshape(-1, 4)
        for line in ax.lines:
            panel.lines[line.get_label()] = np.column_stack(
                [np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), float)]
            )
        for patch in ax.patches:
            if isinstance(patch, Polygon):
                panel.steps[patch.get_label()] = np.asarray(patch.get_xy(), dtype=float)
        for i, coll in enumerate(c for c in ax.collections if isinstance(c, PathCollection)):
            label = coll.get_label() or f"_points{i}"
            panel.points[label] = np.asarray(coll.get_offsets(), dtype=float).reshape(-1, 2)
        for image in ax.images:
            panel.images.append(np.ma.filled(np.ma.asarray(image.get_array(), float), np.nan))
        ticks = [(t.get_position()[1], t.get_text()) for t in ax.get_yticklabels()]
        top_down = ax.yaxis_inverted()
        panel.yticklabels = [text for _, text in sorted(ticks, reverse=not top_down)]
        panel.texts = [t.get_text() for t in ax.texts]
        panels.append(panel)
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    return Drawn(title, panels)


def _save(fig: plt.Figure, png: PathLike, pdf: PathLike) -> Drawn:
    """Write `fig` to `png` and `pdf` atomically, close it, and return what it draws.

    The PDF gets no creation date, so that re-running a rule on the same inputs gives
    byte-identical files (the archive and `snakemake --report` do not churn).
    """
    data = drawn(fig)
    try:
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    finally:
        plt.close(fig)
    return data


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
