"""The contrasts the paper states, each computed once: top-k heads against the rest, and
the self-insertion attack against its control.

Pure functions of the workflow's tables (heads.parquet, attack_self_insertion.parquet),
torch-free, used by the steps' logs, the model card, the figures and the tables. Each
statistic is taken over the independent unit: the heads' OV scores and attention over
heads, the attack's attack-minus-control over facts (a t-interval of the mean). The
keys of what they return are declared in `forbidden_facts.artifacts` (`HeadGroups`,
`AttackContrast`).

Example:
    >>> import pandas as pd
    >>> heads = pd.DataFrame({"component": ["L0H0ATN", "L0H1ATN", "L1H0ATN"],
    ...     "rank": [0, 2, 1], "ov_score": [-1.0, 0.2, 0.1], "attn_forbidden_c": [0.3, 0.1, 0.0]})
    >>> top, rest = split_heads(heads, 1)
    >>> list(top["component"]), list(rest["component"])
    (['L0H0ATN'], ['L0H1ATN', 'L1H0ATN'])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .artifacts import AttackContrast as AC
from .artifacts import HeadGroups as HG
from .intervals import t_interval


def interval(values) -> tuple[float | None, float | None, float | None]:
    """Mean and 95% t-interval of independent values (None where undefined)."""
    x = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return None, None, None
    mean, low, high = (float(v) for v in t_interval(x))
    return mean, (low if np.isfinite(low) else None), (high if np.isfinite(high) else None)


def _below(a_high, b_low) -> bool:
    """True when interval a lies entirely below interval b (both known)."""
    return a_high is not None and b_low is not None and a_high < b_low


def split_heads(heads: pd.DataFrame, top_k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The top-k suppressor heads (smallest component rank) and the rest.

    Args:
        heads: heads.parquet (`forbidden_facts.artifacts.HEAD_COLUMNS`), or components.parquet
            (its heads are taken).
        top_k: How many heads count as "top" (config `heads.top_k`).
    """
    if "type" in heads:
        heads = heads[heads["type"] == "head"]
    if not len(heads):
        return heads, heads
    top = heads.nsmallest(top_k, "rank")
    return top, heads.drop(top.index)


def top_head_names(heads: pd.DataFrame, top_k: int) -> list[str]:
    """The names of the top-k suppressor heads, most suppressive first."""
    return list(split_heads(heads, top_k)[0].sort_values("rank")["component"])


def head_groups(heads: pd.DataFrame | None, top_k: int) -> dict[str, Any]:
    """OV score and forbidden-word attention of the top-k suppressor heads vs the rest.

    Returns:
        The keys of `forbidden_facts.artifacts.HeadGroups`: each group's mean with a 95%
        t-interval over its heads, the top head, the contrasts, and the two claims (the
        top heads suppress what they read more than the rest: their OV interval lies
        below the rest's; they attend to the forbidden word more: their attention
        interval lies above).
    """
    heads = heads if heads is not None else pd.DataFrame()
    top, rest = split_heads(heads, top_k)
    out: dict[str, Any] = {HG.top_heads_k: int(top_k)}
    out[HG.n_top_heads], out[HG.n_other_heads] = int(len(top)), int(len(rest))
    first = top.sort_values("rank").iloc[0] if len(top) else None
    out[HG.top_head] = str(first["component"]) if first is not None else None
    out[HG.top_head_ov] = float(first["ov_score"]) if first is not None else None
    out[HG.top_head_attn] = float(first["attn_forbidden_c"]) if first is not None else None
    for group, frame in (("top_heads", top), ("other_heads", rest)):
        for name, column in (
            ("ov", "ov_score"),
            ("attn", "attn_forbidden_c"),
            ("attn_nc0", "attn_forbidden_nc0"),
            ("attn_nc1", "attn_forbidden_nc1"),
        ):
            mean, low, high = interval(frame[column] if column in frame else [])
            out[f"{group}_{name}"] = mean
            if name in ("ov", "attn"):
                out[f"{group}_{name}_low"], out[f"{group}_{name}_high"] = low, high
    top_ov, rest_ov = out[HG.top_heads_ov], out[HG.other_heads_ov]
    out[HG.ov_contrast] = top_ov - rest_ov if None not in (top_ov, rest_ov) else None
    top_attn, rest_attn = out[HG.top_heads_attn], out[HG.other_heads_attn]
    out[HG.attn_ratio] = top_attn / rest_attn if top_attn is not None and rest_attn else None
    out[HG.ov_claim] = _below(out[HG.top_heads_ov_high], out[HG.other_heads_ov_low])
    out[HG.attn_claim] = _below(out[HG.other_heads_attn_high], out[HG.top_heads_attn_low])
    missing = set(HG.keys().values()) - set(out)
    assert not missing, f"head_groups lacks {missing} of artifacts.HeadGroups"
    return out


def attack_contrast(attack_table: pd.DataFrame | None) -> dict[str, Any]:
    """Attack minus control change in log-odds (log10), with its 95% interval over facts.

    One sign convention: negative means inserting the answer lowers it more than
    inserting an unrelated word. The attack claim holds when the interval lies below 0.

    Returns:
        The keys of `forbidden_facts.artifacts.AttackContrast`.
    """
    mean = low = high = None
    if attack_table is not None and len(attack_table):
        wide = attack_table.pivot_table(
            index="fact_id", columns="variant", values="delta_logodds_log10", aggfunc="mean"
        )
        if {"attack", "control"} <= set(wide.columns):
            mean, low, high = interval((wide["attack"] - wide["control"]).dropna())
    return {
        AC.attack_minus_control: mean,
        AC.attack_minus_control_low: low,
        AC.attack_minus_control_high: high,
        AC.attack_claim: _below(high, 0.0),
    }


def attack_verdict(contrast: dict[str, Any]) -> str | None:
    """One sentence on the attack, from the same claim the paper's sentence states.

    Args:
        contrast: `attack_contrast`'s result.
    """
    diff = contrast[AC.attack_minus_control]
    if diff is None:
        return None
    low, high = contrast[AC.attack_minus_control_low], contrast[AC.attack_minus_control_high]
    where = f"95% interval over facts {low:.2f} to {high:.2f}" if low is not None else "no interval"
    if contrast[AC.attack_claim]:
        return (
            f"naming the answer lowers its log-odds by {-diff:.2f} log10 more than the "
            f"control ({where})"
        )
    return (
        f"not shown to beat the control: attack minus control is {diff:.2f} log10 ({where}), "
        "an interval that does not lie below zero"
    )


def mechanism(
    summary: dict, components: pd.DataFrame, heads: pd.DataFrame, attack: dict, top_k: int
) -> dict[str, Any]:
    """The organism's mechanism in numbers (docs/organism.md § Targets), for its model card.

    Args:
        summary: summary.json (`artifacts.Attribution`).
        components: components.parquet.
        heads: heads.parquet.
        attack: attack_summary.json (`artifacts.Attack`).
        top_k: The top heads (config `heads.top_k`).

    Returns:
        The keys of `forbidden_facts.artifacts.Mechanism`.
    """
    from .artifacts import Attack, Attribution, Mechanism
    from .identification import head_share

    groups = head_groups(heads, top_k)
    n_comp = len(components)
    n_star, k90 = summary[Attribution.n_star], summary[Attribution.k_ninety]
    return {
        Mechanism.n_components: n_comp,
        Mechanism.head_share: head_share(components),
        Mechanism.n_promotive: summary[Attribution.n_promotive],
        Mechanism.n_star: n_star,
        Mechanism.n_star_frac: n_star / n_comp if n_star else None,
        Mechanism.n_star_degenerate: summary[Attribution.n_star_degenerate],
        Mechanism.k_ninety: k90,
        Mechanism.k_ninety_frac: k90 / n_comp if k90 else None,
        Mechanism.top_heads_ov: groups[HG.top_heads_ov],
        Mechanism.other_heads_ov: groups[HG.other_heads_ov],
        Mechanism.top_heads_attn: groups[HG.top_heads_attn],
        Mechanism.other_heads_attn: groups[HG.other_heads_attn],
        Mechanism.attack_minus_control: attack[Attack.attack_minus_control],
    }
