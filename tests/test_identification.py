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
    n_star_context,
    noise_tolerance,
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


def test_intervals_are_over_facts_not_pairs():
    # A fact's two pairs share its effect exactly: 2N pairs carry only N facts' information.
    rng = np.random.default_rng(1)
    n_facts = 30
    fact_effect = -0.2 + 0.3 * rng.standard_normal(n_facts)
    rows = []
    for f, value in enumerate(fact_effect):
        for pair in ("nc0", "nc1"):
            rows.append((f"f{f}", pair, "nc_to_c", "L0H0ATN", value * LN10))
    comps = rank_components(
        pd.DataFrame(rows, columns=["fact_id", "pair", "direction", "component", "delta_logodds"])
    )
    row = comps.iloc[0]
    half = 0.5 * (row.ci_high - row.ci_low)
    expected = stats_t(n_facts - 1) * fact_effect.std(ddof=1) / math.sqrt(n_facts)
    assert half == pytest.approx(expected, rel=1e-9)
    assert row.n_facts == n_facts and row.n_pairs == 2 * n_facts
    # A cluster bootstrap over facts agrees with the t-interval.
    boots = [fact_effect[rng.integers(0, n_facts, n_facts)].mean() for _ in range(4000)]
    low, high = np.quantile(boots, [0.025, 0.975])
    assert 0.5 * (high - low) == pytest.approx(half, rel=0.15)


def stats_t(dof):
    from scipy import stats

    return stats.t.ppf(0.975, dof)


def test_float_noise_is_neutral_whatever_its_interval():
    # EMBED at the last position: the same token in every prompt, a rounding-level effect
    # whose interval still excludes 0.
    means = {"EMBED": 2e-10, "L0H0ATN": -1.0, "L0H1ATN": 0.5}
    attribution = _attribution(means, noise=1e-12)
    tolerance = noise_tolerance("float32", 5.0)
    comps = rank_components(attribution, list(means), tolerance=tolerance).set_index("component")
    assert comps.loc["EMBED", "ci_low"] > 0  # "significant" by the interval alone
    assert comps.loc["EMBED", "role"] == "neutral" and comps.loc["EMBED", "within_noise"]
    assert comps.loc["L0H1ATN", "role"] == "promotive"
    assert "EMBED" not in promotive_summary(comps.reset_index())["top_promotive"]
    # The tolerance follows the dtype's precision.
    assert noise_tolerance("float16", 5.0) / noise_tolerance("float32", 5.0) == 2.0**13
    assert noise_tolerance("bfloat16", 0.1) == 2.0**-7


def test_negative_total_effect_has_no_n_star_and_no_shares():
    # The model raises the forbidden answer: nothing for the components to explain.
    curve = -np.array([0.5, 0.2, -0.1])
    assert n_star(curve, -0.8) is None
    assert n_star(curve, 0.0) is None
    assert set(k_shares(curve, -0.8).values()) == {None}
    ctx = n_star_context(curve, -0.8, None, 3)
    assert ctx["n_star_degenerate"] and "not positive" in ctx["n_star_degenerate_reason"]
    assert ctx["n_star_frac"] is None


def test_n_star_degenerate_rules():
    # The organism's case: the curve creeps up to the total and crosses it by rounding.
    creeping = -np.linspace(0.1, 3.5008, 37)
    ns = n_star(creeping, 3.5)
    ctx = n_star_context(creeping, 3.5, ns, 37)
    assert ns == 37 and ctx["n_star_degenerate"]
    assert ctx["max_overshoot_log10"] == pytest.approx(8e-4, abs=1e-9)
    # The paper's case: a clear overshoot early on, then promotive components pull it back.
    clear = -np.concatenate([np.linspace(0.4, 3.6, 35), np.linspace(3.7, 3.1, 35)])
    ctx = n_star_context(clear, 3.05, n_star(clear, 3.05), 1057)
    assert not ctx["n_star_degenerate"] and ctx["n_star_degenerate_reason"] is None
    assert ctx["n_star_frac"] == pytest.approx(n_star(clear, 3.05) / 1057)
    # Clear overshoot but more than half the components.
    ctx = n_star_context(clear, 3.05, n_star(clear, 3.05), 40)
    assert ctx["n_star_degenerate"] and "half" in ctx["n_star_degenerate_reason"]


def test_dynamic_order_beats_the_fixed_order_in_summed_deltas_at_every_k():
    from forbidden_facts.identification import dynamic_curve, dynamic_orders

    # Pairs disagree on which component suppresses most, so the fixed order (the mean)
    # is not every pair's best.
    rng = np.random.default_rng(1)
    labels = ["EMBED", "L0H0ATN", "L0H1ATN", "L0MLP", "L1H0ATN", "L1MLP"]
    rows = []
    for f in range(6):
        for pair in ("nc0", "nc1"):
            for comp in labels:
                value = rng.normal(0, 1)
                rows.append((f"f{f}", pair, "nc_to_c", comp, value))
                rows.append((f"f{f}", pair, "c_to_nc", comp, -value))
    attr = pd.DataFrame(
        rows, columns=["fact_id", "pair", "direction", "component", "delta_logodds"]
    )
    orders = dynamic_orders(attr, labels)
    assert len(orders) == 12 and all(sorted(o) == sorted(labels) for o in orders.values())
    fixed = list(rank_components(attr, labels).component)
    wide = attr[attr.direction == "nc_to_c"].set_index(["fact_id", "pair", "component"])
    gained = False
    for key, own in orders.items():
        vals = wide["delta_logodds"]
        dyn = np.cumsum([vals[(*key, c)] for c in own])
        fix = np.cumsum([vals[(*key, c)] for c in fixed])
        assert (dyn <= fix + 1e-12).all()  # at least as suppressive at every k
        assert dyn[-1] == pytest.approx(fix[-1])  # all components: the same sum
        gained |= bool((dyn < fix - 1e-9).any())
    assert gained
    # Ties go to the residual order.
    tie = attr.assign(delta_logodds=0.0)
    assert dynamic_orders(tie, labels)[("f0", "nc0")] == labels
    curve = dynamic_curve(np.array([[-1.0, -2.0], [-3.0, -4.0]]))
    assert list(curve["mean_log10_dynamic"]) == [-2.0, -3.0]
    assert curve["q025_log10_dynamic"][0] < curve["q975_log10_dynamic"][0]
