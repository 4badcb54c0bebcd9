"""Identification of the suppressive components (docs/science.md § Identification).

1. Rank components by their mean nc->c log BF over all 2N pairs (ascending).
2. Cumulative patching in that order; the per-pair values give the band.
3. N* is the smallest k whose mean cumulative suppression exceeds the total effect;
   k50..k95 the smallest k reaching that share of it.
4. Independence: the cumulative curve against the running sum of single means.
5. Promotive ("Waluigi") components: mean nc->c log BF significantly positive.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _stats

from .decompose import parse_label
from .metrics import to_log10

SHARES = {"k50": 0.5, "k80": 0.8, "k90": 0.9, "k95": 0.95}


def rank_components(
    attribution: pd.DataFrame, label_order: list[str] | None = None
) -> pd.DataFrame:
    """Per-component mean nc->c effect (log10) over all pairs, with a 95% CI and roles.

    Args:
        attribution: Long table with ``fact_id``, ``pair``, ``direction``, ``component``,
            ``delta_logodds`` (natural log).
        label_order: Residual order of the labels (ties are broken by it).

    Returns:
        ``component``, ``layer``, ``head``, ``type``, ``mean_log10``, ``ci_low``, ``ci_high``,
        ``std_log10``, ``n_pairs``, ``mean_c_to_nc_log10``, ``rank`` (0 = most suppressive)
        and ``role`` (suppressive / promotive / neutral by the CI).
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
    n = table["n_pairs"].to_numpy()
    sem = table["std_log10"].to_numpy() / np.sqrt(n)
    tcrit = np.array([_t_crit(k - 1) for k in n])
    table["ci_low"] = table["mean_log10"] - tcrit * sem
    table["ci_high"] = table["mean_log10"] + tcrit * sem
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
    table["role"] = np.where(
        table["ci_high"] < 0, "suppressive", np.where(table["ci_low"] > 0, "promotive", "neutral")
    )
    cols = [
        "component",
        "layer",
        "head",
        "type",
        "mean_log10",
        "ci_low",
        "ci_high",
        "std_log10",
        "n_pairs",
        "mean_c_to_nc_log10",
        "rank",
        "role",
    ]
    return table[cols]


def _t_crit(dof: int) -> float:
    if dof < 1:
        return math.nan
    return float(_stats.t.ppf(0.975, dof))


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


def n_star(mean_curve_log10: np.ndarray, total_effect_log10: float) -> int | None:
    """Smallest k whose mean cumulative suppression exceeds the total effect (None if none)."""
    hits = np.nonzero(-np.asarray(mean_curve_log10) > total_effect_log10)[0]
    return int(hits[0]) + 1 if len(hits) else None


def k_shares(mean_curve_log10: np.ndarray, total_effect_log10: float) -> dict[str, int | None]:
    """Smallest k reaching 50/80/90/95% of the total effect."""
    out = {}
    for name, share in SHARES.items():
        hits = np.nonzero(-np.asarray(mean_curve_log10) >= share * total_effect_log10)[0]
        out[name] = int(hits[0]) + 1 if len(hits) else None
    return out


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
    positive = components[components["mean_log10"] > 0]
    return {
        "n_promotive_significant": int(len(promo)),
        "n_positive_mean": int(len(positive)),
        "promotive_sum_log10": float(promo["mean_log10"].sum()),
        "positive_sum_log10": float(positive["mean_log10"].sum()),
        "top_promotive": positive.sort_values("mean_log10", ascending=False)["component"]
        .head(top)
        .tolist(),
    }


def mechanism_figures(summary_path, components_path, heads_path, attack_path) -> dict:
    """The organism's mechanism in numbers (docs/organism.md § Targets), read from the artifacts."""
    from . import io

    summary = io.read_json(summary_path)
    comps = io.read_parquet(components_path)
    heads = io.read_parquet(heads_path)
    attack = io.read_json(attack_path)
    neg = comps[comps["mean_log10"] < 0]
    head_share = float(neg.loc[neg["type"] == "head", "mean_log10"].sum() / neg["mean_log10"].sum())
    top = heads.nsmallest(10, "rank")
    rest = heads.drop(top.index)
    n_comp = len(comps)
    return {
        "n_components": n_comp,
        "head_share_of_suppression": head_share,
        "n_promotive_significant": summary["n_promotive_significant"],
        "n_star": summary["n_star"],
        "n_star_frac": summary["n_star"] / n_comp if summary["n_star"] else None,
        "k90": summary["k90"],
        "k90_frac": summary["k90"] / n_comp if summary["k90"] else None,
        "top10_heads_ov_score": float(top["ov_score"].mean()),
        "other_heads_ov_score": float(rest["ov_score"].mean()),
        "top10_heads_attn_forbidden_c": float(top["attn_forbidden_c"].mean()),
        "other_heads_attn_forbidden_c": float(rest["attn_forbidden_c"].mean()),
        "attack_minus_control_log10": attack["mean_delta_logodds_log10"]
        - attack["control_mean_delta_logodds_log10"],
    }
