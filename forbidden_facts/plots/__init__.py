"""Figures of the replication, one pure function per figure.

Every function takes tables (pandas), dicts or arrays that the workflow has already
computed, draws one figure and writes it twice, as a PNG (150 dpi) for the Snakemake
report and as a PDF for the paper. Nothing here touches a model: a researcher can
redraw any figure from the artifacts alone. Files are written atomically, so a killed
job never leaves a truncated image behind.

Conventions: effects are shown in log10 (every such axis says so), "nc->c" is the
first-order patching direction that ranks the components (negative = suppressive,
docs/science.md § Patching), and suppression curves flip that sign so that up means more suppression.

The package has one module per stage (:mod:`.inference`, :mod:`.attribution`,
:mod:`.heads`, :mod:`.attack`, :mod:`.faithfulness`) and :mod:`.common` for what they share.
"""

import matplotlib

# Before any module of the package imports pyplot: files only, no display.
matplotlib.use("Agg")

from .attack import attack_tokens, attack_vs_control  # noqa: E402
from .attribution import (  # noqa: E402
    cumulative,
    cumulative_note,
    independence,
    layer_head_heatmap,
    luigi_waluigi,
    top_components,
)
from .common import DPI, KIND_COLORS, KIND_LABELS, TYPE_COLORS, Drawn, Panel, drawn  # noqa: E402
from .faithfulness import attack_prediction, circuit_curves  # noqa: E402
from .heads import attention_pattern, head_statistics  # noqa: E402
from .inference import overview  # noqa: E402
from .shift import component_shift  # noqa: E402

__all__ = [
    "DPI",
    "KIND_COLORS",
    "KIND_LABELS",
    "TYPE_COLORS",
    "Drawn",
    "Panel",
    "drawn",
    "attack_prediction",
    "attack_tokens",
    "attack_vs_control",
    "attention_pattern",
    "circuit_curves",
    "component_shift",
    "cumulative",
    "cumulative_note",
    "head_statistics",
    "independence",
    "layer_head_heatmap",
    "luigi_waluigi",
    "overview",
    "top_components",
]
