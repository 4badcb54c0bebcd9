"""The artifact contract: every key is declared once, the templates use only declared
names, the writers produce exactly the declared keys, and today's keys stay."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forbidden_facts import artifacts as A
from forbidden_facts import tables_latex as L
from forbidden_facts.effects import attack_contrast, head_groups
from forbidden_facts.identification import attribution_summary

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT / "paper" / "templates").glob("*.tex.j2"))

# The summary keys that exist in the files today: independent checks read them, so
# each must stay declared with this text (add keys freely; never drop one of these).
KEPT_KEYS = {
    A.Download: "url sha256 bytes",
    A.FactsReport: "dataset skipped source sha256 n_facts n_skipped",
    A.Prompts: "prompt_style model_max_facts n_facts_in n_facts n_dropped dropped_by_reason "
    "n_prompts n_irrelevant_words warnings",
    A.Inference: "model dataset n_facts n_kept frac_known total_effect_log10 "
    "total_effect_std_log10 warnings by_relation",
    A.Attribution: "model dataset n_kept n_pairs n_components total_effect_log10 ci_unit "
    "total_effect_ci suppresses noise_tolerance_log10 n_star n_star_heads n_star_mlps "
    "n_star_embed n_star_ci n_star_ci_share_found n_star_frac n_star_degenerate "
    "n_star_degenerate_reason max_overshoot_log10 k50 k80 k90 k95 top_component "
    "top_component_mean_log10 n_suppressive_significant n_promotive_significant "
    "n_positive_mean promotive_sum_log10 positive_sum_log10 top_promotive curve_k_max",
    A.Attack: "model dataset n_facts slot frac_top1_flipped mean_delta_logodds_log10 "
    "control_frac_top1_flipped control_mean_delta_logodds_log10 control_minus_attack_log10 "
    "verdict example",
    A.AttackExample: "fact_id prefix answer forbidden_word inserted prompt_before prompt_after "
    "p_before p_after delta_logodds_log10 top5_before top5_after",
    A.Card: "model n_params n_layers n_heads n_kv_heads d_model vocab_size dataset frac_known "
    "n_facts n_kept total_effect_log10 train_seconds seed n_train_words n_held_out_words "
    "n_facts_never_forbidden frac_known_never_forbidden total_effect_never_forbidden_log10 "
    "mechanism",
    A.Mechanism: "n_components head_share_of_suppression n_promotive_significant n_star "
    "n_star_frac n_star_degenerate k90 k90_frac top10_heads_ov_score other_heads_ov_score "
    "top10_heads_attn_forbidden_c other_heads_attn_forbidden_c attack_minus_control_log10",
}


@pytest.mark.parametrize("artifact", list(KEPT_KEYS), ids=lambda a: a.__name__)
def test_todays_keys_stay_declared(artifact):
    declared = {k.path[0] for k in artifact.keys().values()}
    assert set(KEPT_KEYS[artifact].split()) <= declared


def test_every_number_names_one_macro():
    names = A.number_names()
    assert len(names) == len(set(names)), "two artifacts give a number the same name"
    macros = [L.slug(n) for n in names]
    assert len(macros) == len(set(macros)), "two numbers share a macro name"


def _template_names() -> tuple[set[str], set[str], set[str]]:
    """Run number names, paper number names and macro suffixes the templates use."""
    runs, papers, macros = set(), set(), set()
    for path in TEMPLATES:
        text = path.read_text()
        runs |= set(re.findall(r"\b(?:n|r\.numbers)\.([a-z_0-9]+)", text))
        papers |= set(re.findall(r"\b(?:paper|r\.paper)\.([a-z_0-9]+)", text))
        macros |= set(re.findall(r"\(\(\( [RPF] \)\)\)([A-Za-z]+)\{", text))
    return runs, papers, macros


def test_the_comparison_template_reads_only_keys_of_its_contract():
    text = (ROOT / "paper/templates/component_shift.tex.j2").read_text()
    used = set(re.findall(r"\bcs\.([a-z_0-9]+)", text))
    assert used and used <= set(A.ComponentShift.keys()), sorted(
        used - set(A.ComponentShift.keys())
    )


def test_every_name_the_templates_use_is_in_the_contract():
    runs, papers, macros = _template_names()
    run_names = set(A.number_names())
    paper_names = set(A.number_names([A.Reference])) | {"n_star_frac", "ov_contrast"}
    assert runs and runs <= run_names, sorted(runs - run_names)
    assert papers and papers <= paper_names, sorted(papers - paper_names)
    known = {L.slug(n) for n in run_names | paper_names}
    findings = {m for m in macros if m.startswith("Finding")}
    assert macros - findings <= known, sorted(macros - findings - known)


def test_reference_numbers_share_the_runs_names():
    # A paper column beside ours: every published number has the name of a run's number.
    extra = set(A.number_names([A.Reference])) - set(A.number_names())
    assert not extra, extra


def test_a_missing_key_names_the_file_and_the_fix():
    with pytest.raises(KeyError, match=r"summary\.json has no key 'k90'.*forcerun"):
        A.Attribution.k_ninety.read({}, "results/m/d/summary.json")
    assert A.Card.never_forbidden_effect.read({}, "card") is None  # optional
    assert A.Attribution.top_promotive.read({"top_promotive": []}, "s") is None  # below: None


def test_head_groups_and_attack_contrast_give_the_declared_keys():
    rng = np.random.default_rng(0)
    heads = pd.DataFrame(
        {
            "component": [f"L0H{h}ATN" for h in range(6)],
            "rank": rng.permutation(6),
            "ov_score": rng.normal(size=6),
            "attn_forbidden_c": rng.uniform(size=6),
            "attn_forbidden_nc0": rng.uniform(size=6),
            "attn_forbidden_nc1": rng.uniform(size=6),
        }
    )
    assert set(head_groups(heads, 2)) == set(A.HeadGroups.keys().values())
    table = pd.DataFrame(
        {
            "fact_id": ["a", "b", "a", "b"],
            "variant": ["attack", "attack", "control", "control"],
            "delta_logodds_log10": [-1.0, -1.2, -0.1, 0.0],
        }
    )
    assert set(attack_contrast(table)) == set(A.AttackContrast.keys().values())


def test_attribution_summary_writes_every_declared_key():
    comps = pd.DataFrame(
        {
            "component": ["L0H0ATN", "L0MLP", "EMBED"],
            "type": ["head", "mlp", "embed"],
            "mean_log10": [-0.5, -0.1, 0.2],
            "role": ["suppressive", "neutral", "promotive"],
            "within_noise": [False, False, False],
        }
    )
    values = np.array([[-0.4, -0.6, -0.5], [-0.5, -0.8, -0.6]] * 2)
    summary = attribution_summary(
        comps, values, np.full(4, 0.5), ["f1", "f1", "f2", "f2"], 2, (1.0, 3.0, 0.9), 1e-6
    )
    expected = set(A.Attribution.required()) - {
        A.Attribution.model_name,
        A.Attribution.dataset_name,
    }
    assert set(summary) == expected
    numbers = A.Attribution.numbers({**summary, "model": "m", "dataset": "d"})
    assert numbers["k_ninety"] == 1 and numbers["n_star_ci_low"] == 1.0  # 0.45 >= 0.9 * 0.5
    assert numbers["head_share"] == pytest.approx(0.5 / 0.6)


def test_the_library_writes_the_declared_columns():
    from forbidden_facts.identification import rank_components
    from forbidden_facts.inference import add_kept
    from forbidden_facts.prompts import build_prompts

    facts = pd.DataFrame(
        {
            "fact_id": ["f1", "f2"],
            "relation": ["capital", "capital"],
            "prefix": ["The capital of France is", "The capital of Italy is"],
            "answer": ["Paris", "Rome"],
            "wrong_answer": ["Rome", "Paris"],
        }
    )
    prompts = build_prompts(facts, pd.Series(["lamp", "cup"]))
    assert tuple(prompts.columns) == A.PROMPT_COLUMNS
    table = prompts[["fact_id", "kind"]].assign(
        p_correct=0.9, logodds=1.0, top1_token="x", top1_prob=0.9
    )
    assert tuple(add_kept(table).columns) == A.INFERENCE_COLUMNS
    rows = [
        {"fact_id": f, "pair": p, "direction": d, "component": c, "delta_logodds": v}
        for f in ("f1", "f2")
        for p in ("nc0", "nc1")
        for d in ("nc_to_c", "c_to_nc")
        for c, v in (("EMBED", -0.1), ("L0H0ATN", -1.0), ("L0MLP", 0.3))
    ]
    attribution = pd.DataFrame(rows, columns=list(A.ATTRIBUTION_COLUMNS))
    assert tuple(rank_components(attribution).columns) == A.COMPONENT_COLUMNS
