"""Intervals over facts, not pairs (docs/science.md § Statistics).

A fact's nc0 and nc1 effects correlate (~0.9), so every interval and test here takes
the fact as its unit: the per-fact mean of its pairs, then a t-interval over facts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _stats


def fact_means(attribution: pd.DataFrame, direction: str = "nc_to_c") -> pd.DataFrame:
    """Per-fact mean of each component's effect over the fact's pairs (natural log-odds).

    A fact's nc0 and nc1 effects correlate (0.9 for the top components of the organism),
    so the fact, not the pair, is the independent unit of every interval and test.

    Returns:
        A [facts, components] frame (columns in first-seen order).
    """
    rows = attribution[attribution["direction"] == direction]
    wide = rows.pivot_table(
        index="fact_id", columns="component", values="delta_logodds", aggfunc="mean", sort=False
    )
    return wide[list(dict.fromkeys(rows["component"]))]


def t_interval(per_fact: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the mean over facts (rows); NaN bounds for one fact.

    Args:
        per_fact: [facts, ...] one value per fact (the mean of its pairs).

    Returns:
        (mean, low, high), each shaped like ``per_fact[0]``.
    """
    x = np.asarray(per_fact, dtype=float)
    n = x.shape[0]
    mean = x.mean(axis=0)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    half = _t_crit(n - 1) * x.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def _t_crit(dof: int) -> float:
    if dof < 1:
        return math.nan
    return float(_stats.t.ppf(0.975, dof))


def fact_interval(values_log10: np.ndarray, fact_ids: list[str]) -> tuple[float, float, float]:
    """Mean over pairs and 95% t-interval over facts of one per-pair quantity (log10).

    Args:
        values_log10: [pairs] one value per (fact, pair).
        fact_ids: The fact of each pair.

    Returns:
        (mean over pairs, low, high); the interval's half-width comes from the per-fact
        means (N - 1 degrees of freedom).
    """
    frame = pd.DataFrame({"fact": list(fact_ids), "v": np.asarray(values_log10, dtype=float)})
    per_fact = frame.groupby("fact", sort=False)["v"].mean().to_numpy()
    mean_f, low, high = t_interval(per_fact)
    mean = float(frame["v"].mean())
    return mean, float(mean - (mean_f - low)), float(mean + (high - mean_f))
