"""Identification of the suppressive components (docs/science.md § Identification).

Statistics are over facts: a fact's nc0 and nc1 effects are strongly correlated, so
every confidence interval is a t-interval over the per-fact means of its pairs
(N - 1 degrees of freedom) and every resampling (the N* interval) is a cluster
bootstrap over facts. An effect below the float-noise tolerance of the model's dtype
(`noise_tolerance`) is neutral.

1. Rank components by their mean nc->c log BF over all 2N pairs (ascending).
2. Cumulative patching in that order; the per-pair values give the band.
3. N* is the smallest k whose mean cumulative suppression exceeds the total effect;
   k50..k95 the smallest k reaching that share of it.
4. Independence: the cumulative curve against the running sum of single means.
5. Promotive ("Waluigi") components: mean nc->c log BF significantly positive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .artifacts import COMPONENT_COLUMNS
from .artifacts import Attribution as S
from .components import parse_label
from .intervals import fact_interval, fact_means, t_interval  # noqa: F401 (re-exported)
from .units import to_log10

SHARES = {S.k_fifty: 0.5, S.k_eighty: 0.8, S.k_ninety: 0.9, S.k_ninety_five: 0.95}


# Float noise: a component whose |mean| nc->c effect (natural log-odds) is below
# eps(dtype) * max(1, typical |log-odds|) is neutral. Rounding a residual of the
# model's dtype moves the log-odds by about eps times their magnitude: measured
# per-row patching errors against float32 on the organism are a median 5.8e-4
# (p95 2.8e-3) in float16 and 3.2e-3 (p95 2.2e-2) in bfloat16, i.e. below this
# tolerance (9.8e-4 and 7.8e-3 times the log-odds scale); in float32 it is
# about 1e-6, far above EMBED's 2e-10 at the last position, where every prompt
# ends in the same token.
DTYPE_EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7, "float64": 2.0**-52}


def noise_tolerance(dtype: str, logodds_scale: float) -> float:
    """The |mean effect| (natural log-odds) below which a component is float noise.

    Args:
        dtype: The precision the model ran in (``float32``, ``float16``, ``bfloat16``).
        logodds_scale: Typical magnitude of the answer's natural log-odds (the median
            |log-odds| of the non-competing prompts).

    Returns:
        ``eps(dtype) * max(1, logodds_scale)``.

    Example:
        >>> round(noise_tolerance("float32", 4.0) * 1e7, 3)
        4.768
    """
    if dtype not in DTYPE_EPS:
        raise ValueError(f"noise_tolerance: unknown dtype {dtype!r}; use one of {list(DTYPE_EPS)}")
    scale = float(logodds_scale) if np.isfinite(logodds_scale) else 1.0
    return DTYPE_EPS[dtype] * max(1.0, abs(scale))


def rank_components(
    attribution: pd.DataFrame,
    label_order: list[str] | None = None,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """Per-component mean nc->c effect (log10) over all pairs, with a 95% CI over facts.

    The mean is over all 2N (fact, pair) rows. The interval is a t-interval over facts:
    each fact contributes the mean of its pairs (its nc0 and nc1 effects are not
    independent), so the interval has N - 1 degrees of freedom. A component is
    suppressive when the interval lies below 0, promotive when above, and neutral
    otherwise or when its |mean| is below `tolerance` (float noise, see
    `noise_tolerance`).

    Args:
        attribution: Long table with ``fact_id``, ``pair``, ``direction``, ``component``,
            ``delta_logodds`` (natural log).
        label_order: Residual order of the labels (ties are broken by it).
        tolerance: |mean| (natural log-odds) at or below which an effect is float noise.

    Returns:
        ``component``, ``layer``, ``head``, ``type``, ``mean_log10``, ``ci_low``, ``ci_high``
        (over facts), ``std_log10`` (over pairs), ``n_pairs``, ``n_facts``,
        ``mean_c_to_nc_log10``, ``rank`` (0 = most suppressive), ``role`` (suppressive /
        promotive / neutral) and ``within_noise``.
    """
    nc_to_c = attribution[attribution["direction"] == "nc_to_c"]
    grouped = nc_to_c.groupby("component", sort=False)["delta_logodds"]
    table = pd.DataFrame(
        {
            "mean_log10": to_log10(grouped.mean()),
            "std_log10": to_log10(grouped.std(ddof=1)),
            "n_pairs": grouped.size(),
        }
    )
    c_to_nc = (
        attribution[attribution["direction"] == "c_to_nc"]
        .groupby("component")["delta_logodds"]
        .mean()
    )
    table["mean_c_to_nc_log10"] = to_log10(c_to_nc.reindex(table.index))
    per_fact = to_log10(fact_means(attribution).reindex(columns=table.index).to_numpy())
    _, low, high = t_interval(per_fact)
    # Every kept fact has both pairs, so the mean over facts equals the mean over pairs;
    # the half-width is the facts' (a pair-level interval would be too narrow).
    half = (high - low) / 2
    table["ci_low"] = table["mean_log10"].to_numpy() - half
    table["ci_high"] = table["mean_log10"].to_numpy() + half
    table["n_facts"] = int(per_fact.shape[0])
    table["within_noise"] = np.abs(grouped.mean().to_numpy()) <= tolerance
    order = label_order or list(table.index)
    table["residual_index"] = [order.index(c) for c in table.index]
    table = table.reset_index(names="component")
    table = table.sort_values(["mean_log10", "residual_index"], kind="mergesort").reset_index(
        drop=True
    )
    table["rank"] = np.arange(len(table))
    parsed = [parse_label(c) for c in table["component"]]
    table["type"] = [p[0] for p in parsed]
    table["layer"] = pd.array([p[1] for p in parsed], dtype="Int64")
    table["head"] = pd.array([p[2] for p in parsed], dtype="Int64")
    role = np.where(
        table["ci_high"] < 0, "suppressive", np.where(table["ci_low"] > 0, "promotive", "neutral")
    )
    table["role"] = np.where(table["within_noise"], "neutral", role)
    return table[list(COMPONENT_COLUMNS)]


def curve_length(n_components: int, n_star: int | None, k_min: int) -> int:
    """How far the cumulative curve goes: max(2 N*, k_min), capped at all components."""
    want = max(2 * (n_star or 0), k_min)
    return min(n_components, want)


def cumulative_curve(
    values_log10: np.ndarray, components: list[str], single_means_log10: np.ndarray
) -> pd.DataFrame:
    """Mean and 2.5/97.5% quantiles over pairs of the top-k patched together.

    Args:
        values_log10: [pairs, K] log10 BF with the first k components patched.
        components: The K components in order.
        single_means_log10: The K single-component means, for the independence check.
    """
    k = np.arange(1, values_log10.shape[1] + 1)
    return pd.DataFrame(
        {
            "k": k,
            "component": components,
            "mean_log10": values_log10.mean(axis=0),
            "q025_log10": np.quantile(values_log10, 0.025, axis=0),
            "q975_log10": np.quantile(values_log10, 0.975, axis=0),
            "sum_of_singles_log10": np.cumsum(single_means_log10),
        }
    )


def dynamic_orders(
    attribution: pd.DataFrame, label_order: list[str]
) -> dict[tuple[str, str], list[str]]:
    """Each pair's own order of the components: its nc->c effect, most suppressive first.

    The paper's "dynamic" order for cumulative patching (docs/science.md § Identification):
    instead of one order for all pairs (the mean over pairs), pair p patches in the order of
    its own first-order deltas. Summed first-order deltas in this order are, at every k, at
    least as suppressive as in any other order, and equal to them once every component is
    in.

    Args:
        attribution: Long table with ``fact_id``, ``pair``, ``direction``, ``component``,
            ``delta_logodds``.
        label_order: Residual order of the labels (ties are broken by it).

    Returns:
        ``{(fact_id, pair): [component, ...]}``, every component of `label_order` once.
    """
    rows = attribution[attribution["direction"] == "nc_to_c"]
    position = {label: i for i, label in enumerate(label_order)}
    rows = rows.assign(_pos=rows["component"].map(position))
    if rows["_pos"].isna().any():
        missing = sorted(set(rows.loc[rows["_pos"].isna(), "component"]))[:5]
        raise ValueError(f"dynamic_orders: components not in label_order: {missing}")
    rows = rows.sort_values(["fact_id", "pair", "delta_logodds", "_pos"], kind="mergesort")
    return {
        (str(f), str(p)): list(g["component"])
        for (f, p), g in rows.groupby(["fact_id", "pair"], sort=False)
    }


def dynamic_curve(values_log10: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and 2.5/97.5% quantiles over pairs of the dynamic-order cumulative values.

    Args:
        values_log10: [pairs, K] log10 BF with each pair's own first k components patched.

    Returns:
        ``mean_log10_dynamic``, ``q025_log10_dynamic``, ``q975_log10_dynamic`` ([K] each),
        the columns added beside the fixed-order curve in cumulative.parquet.
    """
    return {
        "mean_log10_dynamic": values_log10.mean(axis=0),
        "q025_log10_dynamic": np.quantile(values_log10, 0.025, axis=0),
        "q975_log10_dynamic": np.quantile(values_log10, 0.975, axis=0),
    }


def n_star(mean_curve_log10: np.ndarray, total_effect_log10: float) -> int | None:
    """Smallest k whose mean cumulative suppression exceeds the total effect.

    None when no k does, and when the total effect is not positive: a model that does not
    suppress the forbidden answer has nothing for the components to explain.
    """
    if not total_effect_log10 > 0:
        return None
    hits = np.nonzero(-np.asarray(mean_curve_log10) > total_effect_log10)[0]
    return int(hits[0]) + 1 if len(hits) else None


def k_shares(mean_curve_log10: np.ndarray, total_effect_log10: float) -> dict[str, int | None]:
    """Smallest k reaching 50/80/90/95% of the total effect (all None if it is not positive)."""
    if not total_effect_log10 > 0:
        return dict.fromkeys(SHARES)
    out = {}
    for name, share in SHARES.items():
        hits = np.nonzero(-np.asarray(mean_curve_log10) >= share * total_effect_log10)[0]
        out[name] = int(hits[0]) + 1 if len(hits) else None
    return out


# N* is "clearly" reached only when the curve overshoots the total effect by at least
# this share of it; a curve that merely creeps up to the total (no promotive
# components to outweigh) crosses it by rounding and says nothing.
OVERSHOOT_MARGIN = 0.05


def n_star_context(
    mean_curve_log10: np.ndarray, total_effect_log10: float, n_star_k: int | None, n_components: int
) -> dict:
    """N* as a share of the components, and whether it is degenerate (and why).

    N* is degenerate when the total effect is not positive (nothing to explain), when the
    curve never exceeds the total effect, when the largest overshoot of the total is below
    `OVERSHOOT_MARGIN` of it, or when N* is more than half the components. A degenerate N*
    is not comparable with the paper's (35 of 1057 components for Llama-2-7b); k90 is.

    Returns:
        ``n_star_frac``, ``n_star_degenerate``, ``n_star_degenerate_reason`` (None when
        not degenerate) and ``max_overshoot_log10`` (largest cumulative suppression minus
        the total effect).
    """
    suppression = -np.asarray(mean_curve_log10, dtype=float)
    overshoot = float(suppression.max() - total_effect_log10) if len(suppression) else None
    reason = None
    if not total_effect_log10 > 0:
        reason = "the total effect is not positive: the model does not suppress the answer"
    elif n_star_k is None:
        reason = "the cumulative curve never exceeds the total effect"
    elif overshoot is not None and overshoot < OVERSHOOT_MARGIN * total_effect_log10:
        reason = (
            f"the cumulative curve exceeds the total effect by less than "
            f"{OVERSHOOT_MARGIN:.0%} of it"
        )
    elif n_star_k > n_components / 2:
        reason = "N* is more than half of the components"
    return {
        S.n_star_frac: n_star_k / n_components if n_star_k and n_components else None,
        S.n_star_degenerate: reason is not None,
        S.n_star_reason: reason,
        S.max_overshoot: overshoot,
    }


def logodds_scale(inference: pd.DataFrame) -> float:
    """Median |natural log-odds| of the answer in the kept facts' non-competing prompts."""
    kept = inference[inference["kept"].astype(bool) & inference["kind"].isin(["nc0", "nc1"])]
    values = np.abs(kept["logodds"].to_numpy(dtype=float))
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else 1.0


def bootstrap_n_star(
    curve_log10: np.ndarray, effect_log10: np.ndarray, fact_ids: list[str], n_boot: int, seed: int
) -> tuple[float | None, float | None, float]:
    """95% bootstrap CI of N* over facts (both pairs of a fact are resampled together).

    Args:
        curve_log10: [pairs, K] cumulative log10 BF per pair.
        effect_log10: [pairs] total effect of each pair (-lbf, log10), re-averaged per resample.
        fact_ids: The fact of each pair.
        n_boot: Resamples.
        seed: Seed of the resampling.

    Returns:
        (low, high, share of resamples in which N* exists within the curve).
    """
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(np.asarray(fact_ids), return_inverse=True)
    n_facts = inverse.max() + 1
    rows_of = [np.nonzero(inverse == i)[0] for i in range(n_facts)]
    found = np.full(n_boot, np.nan)
    for b in range(n_boot):
        rows = np.concatenate([rows_of[i] for i in rng.integers(0, n_facts, n_facts)])
        ns = n_star(curve_log10[rows].mean(axis=0), effect_log10[rows].mean())
        if ns is not None:
            found[b] = ns
    ok = ~np.isnan(found)
    if not ok.any():
        return None, None, 0.0
    return (
        float(np.quantile(found[ok], 0.025)),
        float(np.quantile(found[ok], 0.975)),
        float(ok.mean()),
    )


def promotive_summary(components: pd.DataFrame, top: int = 40) -> dict:
    """Waluigi components: how many are significantly positive and their summed effect."""
    promo = components[components["role"] == "promotive"]
    positive = components[(components["mean_log10"] > 0) & ~_noise(components)]
    return {
        S.n_promotive: int(len(promo)),
        S.n_positive: int(len(positive)),
        S.promotive_sum: float(promo["mean_log10"].sum()),
        S.positive_sum: float(positive["mean_log10"].sum()),
        S.top_promotive_list: positive.sort_values("mean_log10", ascending=False)["component"]
        .head(top)
        .tolist(),
    }


def _noise(components: pd.DataFrame) -> pd.Series:
    if "within_noise" in components:
        return components["within_noise"].astype(bool)
    return pd.Series(False, index=components.index)


def head_share(components: pd.DataFrame) -> float | None:
    """Share of the summed negative mean effects (suppression) carried by attention heads."""
    neg = components[(components["mean_log10"] < 0) & ~_noise(components)]
    total = float(neg["mean_log10"].sum())
    if total == 0:
        return None
    return float(neg.loc[neg["type"] == "head", "mean_log10"].sum() / total)


def attribution_summary(
    components: pd.DataFrame,
    values_log10: np.ndarray,
    effect_log10: np.ndarray,
    fact_ids: list[str],
    n_star_k: int | None,
    n_star_ci: tuple[float | None, float | None, float],
    noise_tolerance_log10: float,
) -> dict:
    """The summary of cumulative patching (summary.json, `forbidden_facts.artifacts.Attribution`).

    Every interval and test is over facts (the per-fact mean of its pairs, or a cluster
    bootstrap over facts for N*).

    Args:
        components: The ranking (components.parquet), most suppressive first.
        values_log10: [pairs, K] cumulative log10 Bayes factor with the top k patched.
        effect_log10: [pairs] total effect of each pair.
        fact_ids: The fact of each pair.
        n_star_k: N* (`n_star` of the mean curve), None when not reached.
        n_star_ci: `bootstrap_n_star`'s (low, high, share found).
        noise_tolerance_log10: |mean| at or below which a component effect is float noise.

    Returns:
        Every key of `Attribution` but ``model`` and ``dataset`` (the step's wildcards).
    """
    order = list(components["component"])
    total, total_low, total_high = fact_interval(effect_log10, fact_ids)
    k = values_log10.shape[1]
    mean_curve = values_log10.mean(axis=0)
    top = components.iloc[0]
    star = components.iloc[:n_star_k] if n_star_k else components.iloc[:0]
    n_components = len(order)
    shares = k_shares(mean_curve, total)
    ci_low, ci_high, ci_share = n_star_ci
    return {
        S.n_kept_patched: int(len(set(fact_ids))),
        S.n_pairs: int(len(fact_ids)),
        S.n_components: int(n_components),
        S.total_effect: total,
        S.ci_unit: "fact",
        S.total_effect_ci: [total_low, total_high],
        S.suppresses: bool(total_low > 0),
        S.total_effect_positive: bool(total > 0),
        S.noise_tolerance: noise_tolerance_log10,
        S.n_star: n_star_k,
        S.n_star_heads: int((star["type"] == "head").sum()),
        S.n_star_mlps: int((star["type"] == "mlp").sum()),
        S.n_star_embed: int((star["type"] == "embed").sum()),
        S.n_star_ci: [ci_low, ci_high],
        S.n_star_ci_share_found: ci_share,
        **n_star_context(mean_curve, total, n_star_k, n_components),
        **shares,
        S.k_ninety_frac: shares[S.k_ninety] / n_components if shares[S.k_ninety] else None,
        S.top_component: top["component"],
        S.top_component_mean: float(top["mean_log10"]),
        S.n_suppressive: int((components["role"] == "suppressive").sum()),
        S.n_noise: int(_noise(components).sum()),
        S.head_share: head_share(components),
        **promotive_summary(components),
        S.curve_k_max: int(k),
    }
