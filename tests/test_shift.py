"""The per-component before/after comparison of a derived model and its base."""

import math

import numpy as np
import pandas as pd
import pytest

from forbidden_facts.shift import component_shift, shift_summary

LN10 = math.log(10)
LABELS = ["EMBED", "L0H0ATN", "L0H1ATN", "L0MLP", "L1H0ATN"]


def _attribution(means: dict[str, float], n_facts: int = 20, noise: float = 0.05, seed: int = 0):
    """Per-fact effects (log10) around `means`, both pairs, as natural log-odds rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_facts):
        for pair in ("nc0", "nc1"):
            for comp, mean in means.items():
                value = mean + noise * rng.standard_normal() if mean else 0.0
                rows.append((f"f{f}", pair, "nc_to_c", comp, value * LN10))
                rows.append((f"f{f}", pair, "c_to_nc", comp, -value * LN10))
    return pd.DataFrame(
        rows, columns=["fact_id", "pair", "direction", "component", "delta_logodds"]
    )


BEFORE = {"EMBED": 0.0, "L0H0ATN": 0.4, "L0H1ATN": -0.5, "L0MLP": -0.2, "L1H0ATN": 0.01}
AFTER = {"EMBED": 0.0, "L0H0ATN": -1.0, "L0H1ATN": -0.5, "L0MLP": -0.6, "L1H0ATN": 0.01}


def test_a_component_that_flips_sign_comes_first_with_its_role_change():
    before, after = _attribution(BEFORE, seed=0), _attribution(AFTER, seed=1)
    table = component_shift(before, after, label_order=LABELS)
    top = table.iloc[0]
    assert top.component == "L0H0ATN" and top.role_changed
    assert (top.before_role, top.after_role) == ("promotive", "suppressive")
    # change is after - before, never the other way round
    assert top.change_log10 == pytest.approx(-1.4, abs=0.05)
    assert top.change_ci_high < 0 and top.change_significant
    assert table.role_changed.tolist() == [True] + [False] * 4
    rows = table.set_index("component")
    # a larger suppression with the same role: a significant change, no role change
    assert rows.loc["L0MLP", "change_significant"] and not rows.loc["L0MLP", "role_changed"]
    assert rows.loc["L0MLP", "before_mean_log10"] == pytest.approx(-0.2, abs=0.05)
    assert rows.loc["L0MLP", "after_mean_log10"] == pytest.approx(-0.6, abs=0.05)
    assert rows.loc["EMBED", "before_role"] == rows.loc["EMBED", "after_role"] == "neutral"
    assert (table.n_facts == 20).all()
    summary = shift_summary(table)
    assert summary["n_role_changed"] == 1
    assert summary["role_changes"] == {"promotive->suppressive": 1}
    assert summary["role_changed_components"] == ["L0H0ATN"]


def test_the_change_interval_is_paired_by_fact():
    # The same model twice: no change and an interval of width 0, whatever the
    # spread over facts; facts given in another order are matched by fact_id.
    same = _attribution(AFTER, noise=0.3, seed=2)
    shuffled = same.sample(frac=1.0, random_state=0)
    table = component_shift(same, shuffled, label_order=LABELS)
    assert not table.role_changed.any() and not table.change_significant.any()
    np.testing.assert_allclose(table.change_log10, 0.0, atol=1e-12)
    np.testing.assert_allclose(table.change_ci_high - table.change_ci_low, 0.0, atol=1e-12)
    # The per-component intervals themselves are not of width 0.
    assert (table.after_ci_high - table.after_ci_low > 0.01)[table.component != "EMBED"].all()


def test_float_noise_is_neutral_before_and_after():
    tiny = {"EMBED": 0.0, "L0H0ATN": 1e-9, "L0H1ATN": -0.5}
    before = _attribution(tiny, noise=1e-11)
    after = _attribution({**tiny, "L0H0ATN": -1e-9}, noise=1e-11, seed=3)
    table = component_shift(before, after, tolerance_before=1e-6, tolerance_after=1e-6)
    row = table.set_index("component").loc["L0H0ATN"]
    assert row.before_role == row.after_role == "neutral" and not row.role_changed


def test_different_facts_are_refused_with_the_rule_to_rerun():
    before = _attribution(BEFORE)
    after = _attribution(AFTER)
    with pytest.raises(ValueError, match="different fact_ids.*base_attribution"):
        component_shift(before[before.fact_id != "f3"], after)


def test_paper_section_only_with_a_derived_model():
    from forbidden_facts.shift import paper_context
    from forbidden_facts.tables_latex import render

    template = "paper/templates/component_shift.tex.j2"
    empty = render(template, paper_context([], None))
    assert r"\section" not in empty and r"\begin{table}" not in empty
    table = component_shift(_attribution(BEFORE), _attribution(AFTER, seed=1), label_order=LABELS)
    summary = {
        **shift_summary(table),
        "total_effect_before_log10": -0.5,
        "total_effect_before_ci": [-0.7, -0.3],
        "total_effect_after_log10": 3.1,
        "total_effect_after_ci": [2.9, 3.3],
        "n_kept_by_base": 4,
    }
    run = {"model": "tiny-b", "base": "tiny", "dataset": "tiny", "summary": summary}
    tex = render(template, paper_context([{**run, "table": table}], "figures/component_shift.pdf"))
    assert r"\section{What the fine-tune changed" in tex
    assert r"\includegraphics" in tex and "figures/component_shift.pdf" in tex
    text = tex.replace("{}", "")  # the templates write "({}" where jinja needs it
    assert r"1 of 5 components changed role (promotive $\to$ suppressive: 1)" in text
    # The role change is the first row, in bold.
    first_row = tex.split(r"\midrule")[1].strip().splitlines()[0]
    assert r"\textbf{\texttt{L0H0ATN}}" in first_row
    assert r"\label{tab:component-shift-TinyBTiny}" in tex
