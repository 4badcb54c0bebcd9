"""Ranking, cumulative curve, N*, k-shares and Waluigi components on hand-made data."""

import math

import numpy as np
import pandas as pd
import pytest

from forbidden_facts.identification import (
    bootstrap_n_star,
    cumulative_curve,
    curve_length,
    k_shares,
    n_star,
    promotive_summary,
    rank_components,
)

LN10 = math.log(10)


def _attribution(means: dict[str, float], n_pairs: int = 40, noise: float = 0.01, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_pairs):
        for comp, mean in means.items():
            for direction in ("nc_to_c", "c_to_nc"):
                value = (mean if direction == "nc_to_c" else -mean) + noise * rng.standard_normal()
                rows.append((f"f{p // 2}", f"nc{p % 2}", direction, comp, value * LN10))
    return pd.DataFrame(
        rows, columns=["fact_id", "pair", "direction", "component", "delta_logodds"]
    )


def test_ranking_roles_and_labels():
    means = {"EMBED": 0.0, "L0H0ATN": -1.0, "L0H1ATN": 0.5, "L0MLP": -0.2, "L1H0ATN": -0.001}
    comps = rank_components(_attribution(means), list(means))
    assert list(comps.component[:3]) == ["L0H0ATN", "L0MLP", "L1H0ATN"]
    assert list(comps["rank"]) == list(range(5))
    roles = dict(zip(comps.component, comps.role, strict=True))
    assert roles["L0H0ATN"] == "suppressive" and roles["L0H1ATN"] == "promotive"
    assert roles["EMBED"] == "neutral"
    row = comps.set_index("component").loc["L0H0ATN"]
    assert row.mean_log10 == pytest.approx(-1.0, abs=0.01)
    assert row.ci_low < row.mean_log10 < row.ci_high
    assert row["type"] == "head" and row["layer"] == 0 and row["head"] == 0
    assert pd.isna(comps.set_index("component").loc["L0MLP", "head"])


def test_n_star_needs_overshoot_and_k_shares_count_from_one():
    # Suppression builds to 3.5 at k=3, then a promotive component brings it back to 3.0.
    mean_curve = -np.array([2.0, 3.0, 3.5, 3.0])
    assert n_star(mean_curve, 3.0) == 3  # strictly exceeds the total effect
    assert n_star(mean_curve, 3.6) is None
    assert k_shares(mean_curve, 3.0) == {"k50": 1, "k80": 2, "k90": 2, "k95": 2}


def test_curve_band_and_independence_on_a_hand_made_example():
    values = np.array([[-1.0, -2.0, -2.5], [-3.0, -4.0, -4.5], [-2.0, -3.0, -3.5]])
    curve = cumulative_curve(values, ["a", "b", "c"], np.array([-2.0, -1.0, -0.5]))
    assert list(curve.k) == [1, 2, 3]
    np.testing.assert_allclose(curve.mean_log10, [-2.0, -3.0, -3.5])
    np.testing.assert_allclose(curve.q025_log10, np.quantile(values, 0.025, axis=0))
    np.testing.assert_allclose(curve.sum_of_singles_log10, [-2.0, -3.0, -3.5])


def test_curve_length_is_at_least_twice_n_star_and_capped():
    assert curve_length(1057, 35, 100) == 100
    assert curve_length(1057, 80, 100) == 160
    assert curve_length(37, None, 100) == 37


def test_bootstrap_ci_contains_the_point_estimate():
    rng = np.random.default_rng(0)
    n = 60
    base = -np.array([1.0, 2.0, 3.2, 3.1, 3.0])
    curve = base + 0.1 * rng.standard_normal((n, 5))
    effect = 3.0 + 0.1 * rng.standard_normal(n)
    ids = [f"f{i // 2}" for i in range(n)]
    low, high, share = bootstrap_n_star(curve, effect, ids, n_boot=200, seed=0)
    assert share > 0.9
    assert low <= n_star(curve.mean(0), effect.mean()) <= high


def test_promotive_summary_counts_significant_waluigis():
    means = {"L0H0ATN": -1.0, "L0H1ATN": 0.5, "L0H2ATN": 0.3, "L0MLP": 0.0005}
    comps = rank_components(_attribution(means, noise=0.05), list(means))
    out = promotive_summary(comps)
    assert out["n_promotive_significant"] == 2
    assert out["promotive_sum_log10"] == pytest.approx(0.8, abs=0.05)
    assert out["top_promotive"][0] == "L0H1ATN"
