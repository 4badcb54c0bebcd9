"""Natural logs inside, log10 in figures and tables (docs/science.md § Metric).

Torch-free, so that steps which only read results (tables, figures) stay light.
"""

from __future__ import annotations

import math

LN10 = math.log(10.0)


def to_log10(x):
    """Convert natural-log quantities (a number, an array or a tensor) to log10."""
    return x / LN10
