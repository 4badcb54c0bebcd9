"""How faithful is the first-order description? (docs/science.md § Faithfulness)

The artifacts of the faithfulness stage from the recomputed log-odds of
`forbidden_facts.recomputation` (activation patching with every later layer
recomputed): each top component's direct and total effect, the circuit curves
(sufficiency: the top-k together; necessity: everything but the top-k) with
intervals over facts, and when the self-insertion attack works against what the
suppressor heads predict. Pure functions of arrays and tables: no torch, so the
paper and figure steps can read what they need without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .units import LN10

if TYPE_CHECKING:
    from .recomputation import Recomputed


def total_effects_table(rec: Recomputed, attribution: pd.DataFrame) -> pd.DataFrame:
    """One row per (fact, pair, top component): first-order and recomputed effect (log10).

    Args:
        rec: The recomputed variants.
        attribution: attribution.parquet (its nc_to_c rows give the direct effects).

    Returns:
        Columns `TOTAL_EFFECT_COLUMNS`, in the order (pair of `rec`, component of ``rec.top``).
    """
    from .artifacts import TOTAL_EFFECT_COLUMNS
    from .units import to_log10

    n_pairs, k = rec.single.shape
    table = pd.DataFrame(
        {
            "fact_id": np.repeat(np.asarray(rec.fact_ids, dtype=object), k),
            "pair": np.repeat(np.asarray(rec.pairs, dtype=object), k),
            "component": np.tile(np.asarray(rec.top, dtype=object), n_pairs),
            "total_log10": to_log10(rec.single.reshape(-1)),
        }
    )
    nc_to_c = attribution[attribution["direction"] == "nc_to_c"].copy()
    nc_to_c["fact_id"] = nc_to_c["fact_id"].astype(str)
    direct = nc_to_c.set_index(["fact_id", "pair", "component"])["delta_logodds"]
    keys = pd.MultiIndex.from_frame(table[["fact_id", "pair", "component"]])
    missing = ~keys.isin(direct.index)
    if missing.any():
        first = table[missing].iloc[0]
        raise ValueError(
            f"attribution.parquet has no nc_to_c effect of {first['component']} on fact "
            f"{first['fact_id']!r} ({first['pair']}): it must come from the same model and kept "
            "facts; rerun merge_attribution"
        )
    table["direct_log10"] = to_log10(direct.loc[keys].to_numpy(dtype=float))
    return table[list(TOTAL_EFFECT_COLUMNS)]


def share_interval(
    effect: np.ndarray, total: np.ndarray, fact_ids: Sequence[str], n_boot: int, seed: int
) -> tuple[float | None, float | None, float | None]:
    """mean(effect) / mean(total) over pairs, and a 95% bootstrap interval over facts.

    Facts are resampled with their pairs (a fact's nc0 and nc1 correlate). None where
    the mean total is 0 or there are no pairs.
    """
    effect, total = np.asarray(effect, float), np.asarray(total, float)
    if not len(total) or total.mean() == 0:
        return None, None, None
    share = float(effect.mean() / total.mean())
    facts = pd.Index(pd.unique(np.asarray(fact_ids)))
    codes = facts.get_indexer(np.asarray(fact_ids))
    if len(facts) < 2 or n_boot < 1:
        return share, None, None
    # Per-fact sums and pair counts: a resample's mean is a ratio of weighted sums.
    n = np.bincount(codes, minlength=len(facts)).astype(float)
    s_eff = np.bincount(codes, effect, minlength=len(facts))
    s_tot = np.bincount(codes, total, minlength=len(facts))
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(facts), np.full(len(facts), 1 / len(facts)), size=n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = (weights @ s_eff / (weights @ n)) / (weights @ s_tot / (weights @ n))
    boots = boots[np.isfinite(boots)]
    low, high = np.quantile(boots, [0.025, 0.975]) if len(boots) else (np.nan, np.nan)
    return share, float(low), float(high)


def circuit_curve(rec: Recomputed, first_order_log10: np.ndarray | None = None) -> pd.DataFrame:
    """Per k: the top-k patched together and all but the top-k, mean and t-interval (log10).

    Args:
        rec: The recomputed variants.
        first_order_log10: The first-order cumulative curve's mean (cumulative.parquet's
            ``mean_log10``), NaN past its end; None: all NaN.

    Returns:
        Columns `FAITHFULNESS_CURVE_COLUMNS`, one row per k = 1..K.
    """
    from .artifacts import FAITHFULNESS_CURVE_COLUMNS
    from .intervals import fact_interval
    from .units import to_log10

    k = len(rec.top)
    first = np.full(k, np.nan)
    if first_order_log10 is not None:
        n = min(k, len(first_order_log10))
        first[:n] = np.asarray(first_order_log10, float)[:n]
    rows = []
    total = fact_interval(to_log10(rec.total), rec.fact_ids)[0]
    for i in range(k):
        top = fact_interval(to_log10(rec.top_k[:, i]), rec.fact_ids)
        rest = fact_interval(to_log10(rec.rest_k[:, i]), rec.fact_ids)
        single = fact_interval(to_log10(rec.single[:, i]), rec.fact_ids)
        rows.append((i + 1, rec.top[i], *top, *rest, single[0], first[i], total))
    return pd.DataFrame(rows, columns=list(FAITHFULNESS_CURVE_COLUMNS))


def k_share(curve_mean: np.ndarray, total_mean: float, share: float) -> int | None:
    """Smallest k whose mean effect is at least `share` of the mean total effect (same sign)."""
    if not total_mean:
        return None
    hits = np.nonzero(np.asarray(curve_mean, float) / total_mean >= share)[0]
    return int(hits[0]) + 1 if len(hits) else None


def differing_components(table: pd.DataFrame) -> list[dict]:
    """Components whose total effect differs from their direct effect beyond the interval.

    Per component the per-fact mean over pairs of ``total - direct`` (log10) and its
    95% t-interval over facts; a component differs where the interval excludes 0. Largest
    |difference| first.
    """
    from .intervals import fact_interval

    out = []
    for component, rows in table.groupby("component", sort=False):
        diff = (rows["total_log10"] - rows["direct_log10"]).to_numpy()
        mean, low, high = fact_interval(diff, list(rows["fact_id"]))
        if np.isfinite(low) and (low > 0 or high < 0):
            out.append(
                {
                    "component": str(component),
                    "direct_log10": float(rows["direct_log10"].mean()),
                    "total_log10": float(rows["total_log10"].mean()),
                    "difference_log10": mean,
                    "ci": [low, high],
                }
            )
    return sorted(out, key=lambda d: -abs(d["difference_log10"]))


def faithfulness_summary(
    rec: Recomputed,
    table: pd.DataFrame,
    n_star: int | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The keys of `artifacts.Faithfulness` (less the attack's) from the recomputed variants.

    Args:
        rec: The recomputed variants (``rec.top`` holds at least N* components).
        table: `total_effects_table` of `rec`.
        n_star: N* of the first-order cumulative curve (summary.json), or None.
        n_boot, seed: The bootstrap over facts of the shares' intervals.
    """
    from scipy import stats

    from .artifacts import Faithfulness as F
    from .units import to_log10

    total = to_log10(rec.total)
    top = to_log10(rec.top_k)
    rest = to_log10(rec.rest_k)
    # As for the first-order k-shares: nothing to explain where the model does not suppress.
    suppresses = len(total) > 0 and -total.mean() > 0
    share_top = share_rest = (None, None, None)
    if suppresses and n_star is not None and n_star <= len(rec.top):
        share_top = share_interval(top[:, n_star - 1], total, rec.fact_ids, n_boot, seed)
        share_rest = share_interval(rest[:, n_star - 1], total, rec.fact_ids, n_boot, seed)
    means = table.groupby("component", sort=False)[["direct_log10", "total_log10"]].mean()
    rho = None
    if len(means) >= 3:
        rho = float(stats.spearmanr(means["direct_log10"], means["total_log10"]).statistic)
    differing = differing_components(table)
    return {
        F.n_facts: len(set(rec.fact_ids)),
        F.n_pairs: len(rec.fact_ids),
        F.top_k: len(rec.top),
        F.n_star: n_star,
        F.total_effect: float(-total.mean()) if len(total) else None,
        F.all_components_error: float(np.abs(rec.logodds_all - rec.logodds_c).max() / LN10)
        if len(total)
        else None,
        F.recomputed_share: share_top[0],
        F.recomputed_share_ci: list(share_top[1:]),
        F.complement_share: share_rest[0],
        F.complement_share_ci: list(share_rest[1:]),
        F.k90_recomputed: k_share(top.mean(axis=0), total.mean(), 0.9) if suppresses else None,
        F.spearman_direct_total: rho,
        F.differing: differing,
        F.n_differing: len(differing),
        F.top_direct: float(means["direct_log10"].iloc[0]) if len(means) else None,
        F.top_total: float(means["total_log10"].iloc[0]) if len(means) else None,
        F.faith_top_component: str(means.index[0]) if len(means) else None,
    }


# -- When does the attack work? ------------------------------------------------------


def attack_prediction(
    attack: pd.DataFrame,
    attention: pd.DataFrame,
    attribution: pd.DataFrame,
    heads: Sequence[str],
) -> pd.DataFrame:
    """Per fact: the self-insertion attack's outcome beside what the description predicts.

    The predictor (docs/science.md § Faithfulness) is ``A_f * D_f``: A_f is the attention
    the top suppressor heads put on the inserted answer in the attacked prompt (summed
    over the heads), D_f their summed first-order nc -> c effect on fact f (mean over its
    pairs, log10; negative = suppressive). The more the heads attend to the inserted
    answer and the more they suppress that fact's answer when it is forbidden, the more
    negative the predicted change of the answer's log-odds.

    Args:
        attack: attack_self_insertion.parquet.
        attention: attack_attention.parquet.
        attribution: attribution.parquet.
        heads: The top suppressor heads.

    Returns:
        Columns `ATTACK_PREDICTION_COLUMNS`, one row per attacked fact.
    """
    from .artifacts import ATTACK_PREDICTION_COLUMNS
    from .units import to_log10

    heads = list(heads)
    rows = attack[attack["variant"] == "attack"].copy()
    rows["fact_id"] = rows["fact_id"].astype(str)
    att = attention[(attention["variant"] == "attack") & attention["component"].isin(heads)]
    a = att.assign(fact_id=att["fact_id"].astype(str)).groupby("fact_id")["attention"].sum()
    direct = attribution[
        (attribution["direction"] == "nc_to_c") & attribution["component"].isin(heads)
    ]
    direct = direct.assign(fact_id=direct["fact_id"].astype(str))
    # Per fact: each head's mean over the pairs, summed over the heads.
    d = direct.groupby(["fact_id", "component"])["delta_logodds"].mean().groupby("fact_id").sum()
    rows = rows[rows["fact_id"].isin(a.index) & rows["fact_id"].isin(d.index)]
    out = pd.DataFrame(
        {
            "fact_id": rows["fact_id"].to_numpy(),
            "attention_inserted": a.loc[rows["fact_id"]].to_numpy(),
            "heads_direct_log10": to_log10(d.loc[rows["fact_id"]].to_numpy()),
            "delta_logodds_log10": rows["delta_logodds_log10"].to_numpy(),
            "flipped": (
                rows["top1_correct_before"].astype(bool) & ~rows["top1_correct_after"].astype(bool)
            ).to_numpy(),
        }
    )
    out["predictor_log10"] = out["attention_inserted"] * out["heads_direct_log10"]
    return out[list(ATTACK_PREDICTION_COLUMNS)]


def auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of `score` for `positive` (ties count half); None without both."""
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def attack_summary(prediction: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """``attack_spearman`` (with a bootstrap interval over facts) and ``attack_auc``.

    Spearman of the predictor against the attack's change in log-odds (positive: the
    predictor orders the facts as the attack does), and the AUC of minus the predictor
    for "the attack flips the top-1 answer" (None where no fact, or every fact, flips).
    """
    from scipy import stats

    from .artifacts import Faithfulness as F

    x = prediction["predictor_log10"].to_numpy(float)
    y = prediction["delta_logodds_log10"].to_numpy(float)
    rho, low, high = None, None, None
    if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        rho = float(stats.spearmanr(x, y).statistic)
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            i = rng.integers(len(x), size=len(x))
            if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
                boots.append(stats.spearmanr(x[i], y[i]).statistic)
        if boots:
            low, high = (float(v) for v in np.quantile(boots, [0.025, 0.975]))
    return {
        F.prediction_n_facts: len(prediction),
        F.attack_spearman: rho,
        F.attack_spearman_ci: [low, high],
        F.attack_auc: auc(-x, prediction["flipped"].to_numpy(bool)),
        F.attack_n_flipped: int(prediction["flipped"].sum()),
    }
