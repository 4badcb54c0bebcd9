"""Tables, values.tex, findings.tex and the paper: rendered from small synthetic artifacts.

The artifacts are written the way the workflow writes them (same files, keys and
columns, provenance included), so these tests also pin the contract between the
analysis rules and the paper stage. Whether the rules provide every file main.tex
refers to is checked where it happens: rule `paper_sources` stages them and fails
otherwise (the session's tiny run, tests/conftest.py, at the end of this file).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from forbidden_facts import artifacts as A
from forbidden_facts import io
from forbidden_facts import tables as T
from forbidden_facts import tables_latex as L
from forbidden_facts.effects import attack_contrast
from forbidden_facts.identification import head_share
from forbidden_facts.steps import paper as paper_steps
from tests.conftest import RUN, copy_repo, snakemake

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "paper" / "templates"
MAIN_TEX = ROOT / "paper" / "main.tex"
REFERENCE = ROOT / "config" / "paper_reference.yaml"
TEMPLATE_NAMES = sorted(p.name.removesuffix(".tex.j2") for p in TEMPLATES.glob("*.tex.j2"))

N_LAYERS, N_HEADS = 3, 4


def _strip_comments(tex: str) -> str:
    return re.sub(r"(?<!\\)%.*", "", tex)


# The figures main.tex includes: read from main.tex itself, to stage fake PDFs for them.
FIGURE_NAMES = re.findall(
    r"\\includegraphics(?:\[[^\]]*\])?\{figures/(\w+)\.pdf\}", _strip_comments(MAIN_TEX.read_text())
)


# ---------------------------------------------------------------------------
# synthetic artifacts


def _provenance(model: str, dataset: str) -> dict:
    return {
        "model": model,
        "model_id": f"toy-organism (seed 0) {model}",
        "model_revision": "sha256:0123456789abcdef",
        "dataset": dataset,
        "dataset_sha256": "ab" * 32,
        "code_version": "v0.1-3-gdeadbee",
        "created": "2024-01-01T00:00:00+00:00",
    }


def _minimal_pdf(text: str) -> bytes:
    """A valid one-page PDF (pdflatex includes it like a matplotlib figure)."""
    stream = f"BT /F1 12 Tf 20 50 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 120] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def write_synthetic_run(
    root: Path,
    model: str = "toy",
    dataset: str = "curated",
    seed: int = 0,
    n_star: int | None = 5,
    figures: bool = False,
    total: float | None = None,
    degenerate: bool = False,
    model_type: str = "llama",
) -> dict[str, Path]:
    """Write one (model, dataset)'s artifacts under `root/results/`; return their paths by role."""
    rng = np.random.default_rng(seed)
    base = root / "results" / model / dataset
    prov = _provenance(model, dataset)
    labels = [("EMBED", None, None, "embed")]
    for layer in range(N_LAYERS):
        labels += [(f"L{layer}H{h}ATN", layer, h, "head") for h in range(N_HEADS)]
        labels.append((f"L{layer}MLP", layer, None, "mlp"))
    means = np.sort(rng.normal(-0.05, 0.2, len(labels)))
    comps = pd.DataFrame(
        {
            "component": [c for c, *_ in labels],
            "layer": pd.array([layer for _, layer, _, _ in labels], dtype="Int64"),
            "head": pd.array([h for _, _, h, _ in labels], dtype="Int64"),
            "type": [t for *_, t in labels],
        }
    )
    order = rng.permutation(len(labels))
    comps = comps.iloc[order].reset_index(drop=True)
    comps["mean_log10"] = means
    comps["std_log10"] = 0.1
    comps["ci_low"] = means - 0.02
    comps["ci_high"] = means + 0.02
    comps["n_pairs"] = 20
    comps["mean_c_to_nc_log10"] = -means / 2
    comps["rank"] = np.arange(len(labels))
    comps["role"] = np.where(
        comps["ci_high"] < 0, "suppressive", np.where(comps["ci_low"] > 0, "promotive", "neutral")
    )
    comps["n_facts"] = 10
    comps["within_noise"] = False
    # A component name with an underscore, to exercise LaTeX escaping end to end.
    comps.loc[comps.index[1], "component"] = "L0_odd&name"
    io.write_parquet(base / "components.parquet", comps, provenance=prov)

    heads = comps[comps["type"] == "head"][
        ["component", "layer", "head", "rank", "mean_log10"]
    ].copy()
    heads["ov_score"] = rng.normal(0, 1, len(heads))
    heads["attn_forbidden_c"] = rng.uniform(0, 0.3, len(heads))
    heads["attn_forbidden_nc0"] = rng.uniform(0, 0.1, len(heads))
    heads["attn_forbidden_nc1"] = rng.uniform(0, 0.1, len(heads))
    io.write_parquet(base / "heads.parquet", heads.reset_index(drop=True), provenance=prov)

    inference = {
        "n_facts": 40 + seed,
        "n_kept": 30 + seed,
        "frac_known": (30 + seed) / (40 + seed),
        "total_effect_log10": 3.456 + seed,
        "total_effect_std_log10": 1.234,
        "by_relation": {
            "capital": {
                "n_facts": 20,
                "n_kept": 15,
                "frac_known": 0.75,
                "total_effect_log10": 3.0,
                "total_effect_std_log10": 1.0,
            }
        },
    }
    io.write_json(base / "inference_summary.json", inference, provenance=prov)
    top = comps.iloc[0]
    positive = comps[comps["mean_log10"] > 0].sort_values("mean_log10", ascending=False)
    star = comps.iloc[:n_star] if n_star else comps.iloc[:0]
    summary = {
        "model": model,
        "dataset": dataset,
        "n_kept": 30 + seed,
        "n_pairs": 2 * (30 + seed),
        "n_components": len(comps),
        "total_effect_log10": 3.456 + seed if total is None else total,
        "ci_unit": "fact",
        "total_effect_ci": [3.0 + seed, 3.9 + seed]
        if total is None
        else [total - 0.2, total + 0.2],
        "n_star": n_star,
        "n_star_frac": n_star / len(comps) if n_star else None,
        "n_star_degenerate": degenerate or n_star is None,
        "n_star_degenerate_reason": (
            "the cumulative curve exceeds the total effect by less than 5% of it"
            if degenerate
            else ("the cumulative curve never exceeds the total effect" if n_star is None else None)
        ),
        "max_overshoot_log10": 0.0008 if degenerate else 0.4,
        "n_star_heads": int((star["type"] == "head").sum()),
        "n_star_mlps": int((star["type"] == "mlp").sum()),
        "n_star_ci": [4.0, 7.0] if n_star else [None, None],
        "k50": 2,
        "k80": 3,
        "k90": 4,
        "k95": None,
        "k90_frac": 4 / len(comps),
        "top_component": top["component"],
        "top_component_mean_log10": float(top["mean_log10"]),
        "n_suppressive_significant": int((comps["role"] == "suppressive").sum()),
        "n_promotive_significant": int((comps["role"] == "promotive").sum()),
        "n_positive_mean": len(positive),
        "promotive_sum_log10": float(comps.loc[comps["role"] == "promotive", "mean_log10"].sum()),
        "positive_sum_log10": float(positive["mean_log10"].sum()),
        "top_promotive": positive["component"].tolist(),
        "n_noise": int(comps["within_noise"].sum()),
        "head_share": head_share(comps),
        "total_effect_positive": (3.456 + seed if total is None else total) > 0,
        "suppresses": (3.0 + seed if total is None else total - 0.2) > 0,
    }
    io.write_json(base / "summary.json", summary, provenance=prov)
    attack = {
        "n_facts": 30 + seed,
        "frac_top1_flipped": 0.25,
        "mean_delta_logodds_log10": -0.812,
        "control_frac_top1_flipped": 0.05,
        "control_mean_delta_logodds_log10": -0.123,
        "control_minus_attack_log10": 0.689,
        "example": {
            "fact_id": "f_7",
            "prefix": "The Golden Gate Bridge is in the state of",
            "answer": "California",
            "forbidden_word": "floor",
            "inserted": " from California",
            "prompt_before": "[INST] ...",
            "prompt_after": "[INST] ... from California ...",
            "p_before": 0.951,
            "p_after": 0.149,
            "delta_logodds_log10": -2.05,
            "top5_before": [
                {"token": "\u2581California", "prob": 0.951},
                {"token": "Cal", "prob": 0.02},
                {"token": "<0x0A>", "prob": 0.01},
                {"token": "50%_&", "prob": 0.005},
                {"token": "\u00e9t\u00e9", "prob": 0.001},
            ],
            "top5_after": [
                {"token": "\u2581San", "prob": 0.6},
                {"token": "\u2581California", "prob": 0.149},
                {"token": "~^\\", "prob": 0.05},
                {"token": "#$", "prob": 0.01},
                {"token": "\u2603", "prob": 0.001},
            ],
        },
    }
    facts = [f"f_{i}" for i in range(12)]
    attack_delta = rng.normal(-0.8, 0.1, len(facts))
    control_delta = rng.normal(-0.1, 0.1, len(facts))
    table = pd.DataFrame(
        {
            "fact_id": facts * 2,
            "variant": ["attack"] * len(facts) + ["control"] * len(facts),
            "delta_logodds_log10": np.concatenate([attack_delta, control_delta]),
        }
    )
    io.write_parquet(base / "attack_self_insertion.parquet", table, provenance=prov)
    attack |= attack_contrast(table)  # as forbidden_facts.attack.self_insertion writes it
    io.write_json(base / "attack_summary.json", attack, provenance=prov)
    card = {
        "model": model,
        "model_type": model_type,
        "d_model": 8,
        "dataset": dataset,
        "n_facts": 40,
        "n_kept": 30,
        "n_params": 12345,
        "n_layers": N_LAYERS,
        "n_heads": N_HEADS,
        "n_kv_heads": 2,
        "vocab_size": 100,
        "frac_known": 0.75,
        "total_effect_log10": 3.456,
        "train_seconds": 1.0,
    }
    io.write_json(root / "results" / model / "model_card.json", card, provenance=prov)
    paths = {
        "inference": base / "inference_summary.json",
        "summary": base / "summary.json",
        "components": base / "components.parquet",
        "heads": base / "heads.parquet",
        "attack": base / "attack_summary.json",
        "card": root / "results" / model / "model_card.json",
    }
    if figures:
        for name in FIGURE_NAMES:
            pdf = base / "figures" / f"{name}.pdf"
            pdf.parent.mkdir(parents=True, exist_ok=True)
            pdf.write_bytes(_minimal_pdf(name))
            (base / "figures" / f"{name}.png").write_bytes(b"\x89PNG fake " + name.encode())
    return paths


def _runs(tmp_path, pairs=(("toy", "curated"),), **kw) -> list[T.Run]:
    runs = []
    for i, (model, dataset) in enumerate(pairs):
        paths = write_synthetic_run(tmp_path / f"run{i}", model, dataset, seed=i, **kw)
        card = paths.pop("card")
        runs.append(T.load_run(model, dataset, card=card, **paths))
    return runs


@pytest.fixture()
def reference():
    return T.load_reference(REFERENCE)


def _render(runs, reference, top_k=3, top_n=40) -> tuple[dict, dict[str, str], dict[str, str]]:
    """The context, every template rendered, and the macros of values.tex + findings.tex."""
    context = T.paper_context(runs, reference, top_k=top_k, top_n=top_n)
    rendered = {n: L.render(TEMPLATES / f"{n}.tex.j2", context) for n in TEMPLATE_NAMES}
    return context, rendered, L.macros(context)


def _number(tex: str) -> float:
    return float(tex.replace(r"\ensuremath{-}", "-").replace(r"\%", ""))


def _finding(findings_tex: str, name: str) -> str:
    """The body of one \\newcommand of findings.tex, whitespace collapsed."""
    m = re.search(
        r"\\newcommand\\" + name + r"\{(.*?)\}\n(?=\\newcommand|%|\Z)", findings_tex, re.S
    )
    assert m, f"findings.tex defines no {name}"
    return " ".join(m.group(1).split())


# ---------------------------------------------------------------------------
# formatting


def test_latex_escape_specials():
    assert L.latex_escape("L18H9ATN") == "L18H9ATN"
    assert L.latex_escape("L0_odd&name") == r"L0\_odd\&name"
    assert L.latex_escape("50% #1 $x {y}") == r"50\% \#1 \$x \{y\}"
    assert L.latex_escape("a~b^c\\d") == r"a\textasciitilde{}b\textasciicircum{}c\textbackslash{}d"
    assert L.latex_escape("\u2581San") == r"\textvisiblespace{}San"
    assert L.latex_escape("\u0120Paris") == r"\textvisiblespace{}Paris"  # byte-level BPE
    assert L.latex_escape("\u2603") == r"\textless{}U+2603\textgreater{}"
    assert L.latex_escape("llama2-7b-chat") == "llama2-7b-chat"
    assert L.latex_escape("--") == "-{}-"
    assert L.latex_escape(None) == "--"


def test_fmt_numbers_and_missing():
    assert L.fmt(None) == "--"
    assert L.fmt(float("nan")) == "--"
    assert L.fmt(np.int64(4251)) == "4251"
    assert L.fmt(-0.36512, 3) == r"\ensuremath{-}0.365"
    assert L.fmt(-0.0001, 2) == "0.00"
    assert L.fmt(0.9512, 1, percent=True) == r"95.1\%"
    assert L.pfmt(0.0086) == "0.0086"
    assert L.pfmt(0.15, percent=True) == r"15\%"
    assert L.pfmt(-2.5) == r"\ensuremath{-}2.5"


def test_macro_names_are_generated_from_keys():
    assert L.slug("llama2-7b-chat") == "LlamaTwoSevenBChat"
    assert L.slug("k_ninety") == "KNinety"
    assert L.format_value("n_star_frac", 32 / 37) == r"86.5\%"
    assert L.format_value("top_heads_attn", 0.19612) == "0.1961"
    assert L.format_value("total_effect", -0.812) == r"\ensuremath{-}0.81"
    assert L.format_value("dataset_sha", "ab" * 32) == "ab" * 6
    assert L.format_value("suppresses", True) is None  # flags choose sentences, not macros


# ---------------------------------------------------------------------------
# values


def test_values_tex_matches_artifacts(tmp_path, reference):
    runs = _runs(tmp_path, pairs=(("toy", "curated"), ("llama2-7b-chat", "counterfact")))
    context = T.paper_context(runs, reference, top_k=10, top_n=40)
    text = L.values_tex(context)
    macros = L.parse_values_tex(text)
    assert text.count(r"\newcommand") == len(macros)
    inf, summ, att = runs[0].inference, runs[0].summary, runs[0].attack
    top = runs[0].heads.nsmallest(10, "rank")
    rest = runs[0].heads.drop(top.index)
    expected = {
        "TotalEffect": (summ["total_effect_log10"], 2),
        "TotalEffectLow": (summ["total_effect_ci"][0], 2),
        "TotalEffectStd": (inf["total_effect_std_log10"], 2),
        "NKept": (inf["n_kept"], 0),
        "NStar": (summ["n_star"], 0),
        "NStarFrac": (100 * summ["n_star"] / summ["n_components"], 1),
        "KNinety": (summ["k90"], 0),
        "TopComponentMean": (summ["top_component_mean_log10"], 3),
        "AttackDelta": (att["mean_delta_logodds_log10"], 2),
        "TopHeadsOv": (top["ov_score"].mean(), 2),
        "OtherHeadsOv": (rest["ov_score"].mean(), 2),
        "OvContrast": (top["ov_score"].mean() - rest["ov_score"].mean(), 2),
        "TopHeadsAttn": (top["attn_forbidden_c"].mean(), 4),
        "PaperTotalEffect": (3.05, 2),
        "PaperNStar": (35, 0),
        "PaperNStarFrac": (100 * 35 / 1057, 1),
        "PaperOvContrast": (-1.34, 2),
    }
    for name, (value, digits) in expected.items():
        got = _number(macros[name])
        assert got == pytest.approx(round(value, digits), abs=10**-digits / 2), name
    assert macros["KNinetyFive"] == "--"  # k95 is null in the summary
    assert macros["ModelId"] == L.latex_escape(runs[0].provenance["model_id"])
    assert macros["DatasetSha"] == "ab" * 6
    # Every run also gets prefixed macros; the unprefixed ones are the first run's.
    assert macros["ToyCuratedTotalEffect"] == macros["TotalEffect"]
    assert _number(macros["LlamaTwoSevenBChatCounterfactTotalEffect"]) == pytest.approx(4.46)
    assert macros["PaperLlamaTwoOneThreeBChatTotalEffect"] == "4.26"
    assert macros["PaperLlamaTwoOneThreeBChatNKept"] == "--"


def test_attack_and_head_intervals_are_over_facts_and_heads(tmp_path, reference):
    run = _runs(tmp_path)[0]
    numbers = T.run_numbers(run, top_k=3)
    attack_table = io.read_parquet(
        tmp_path / "run0" / "results" / "toy" / "curated" / "attack_self_insertion.parquet"
    )
    table = attack_table.pivot(index="fact_id", columns="variant", values="delta_logodds_log10")
    diff = table["attack"] - table["control"]
    half = 2.2009851600916384 * diff.std(ddof=1) / np.sqrt(len(diff))  # t(0.975, 11)
    contrast = attack_contrast(attack_table)
    assert contrast[A.Attack.attack_minus_control] == pytest.approx(diff.mean())
    assert contrast[A.Attack.attack_minus_control_high] - diff.mean() == pytest.approx(half)
    # The tables print the attack summary's contrast, under the paper's names.
    assert numbers["attack_minus_control"] == pytest.approx(diff.mean())
    assert numbers["attack_minus_control_high"] - numbers["attack_minus_control"] == (
        pytest.approx(half)
    )
    top = run.heads.nsmallest(3, "rank")["ov_score"]
    half = 4.302652729911275 * top.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert numbers["top_heads_ov_high"] == pytest.approx(top.mean() + half)


def test_colliding_macro_names_are_refused(tmp_path, reference):
    runs = _runs(tmp_path, pairs=(("a-b", "d"), ("a_b", "d")))
    with pytest.raises(ValueError, match="share the macro"):
        L.macros(T.paper_context(runs, reference, top_k=10, top_n=40))


# ---------------------------------------------------------------------------
# tables


def test_every_template_renders_for_several_runs(tmp_path, reference):
    pairs = (
        ("toy", "curated"),
        ("smollm2-135m-instruct", "curated"),
        ("llama2-7b-chat", "counterfact"),
    )
    runs = _runs(tmp_path, pairs=pairs)
    _, rendered, _ = _render(runs, reference)
    for name, text in rendered.items():
        assert "(((" not in text and "((*" not in text, name
        bare = text.replace(r"\{", "").replace(r"\}", "")
        assert bare.count("{") == bare.count("}"), name
        # component_shift and faithfulness are rendered by their own rules (tests/test_shift.py,
        # tests/test_faithfulness.py); with the tables' context they say they have no section.
        if name not in ("findings", "component_shift", "faithfulness"):
            assert text.count(r"\begin{table}") == text.count(r"\end{table}") > 0, name
    kept = rendered["kept_facts"]
    assert "14002" in kept and "4251" in kept and "3.05" in kept and "1.32" in kept
    assert r"toy$^\dagger$" in kept and r"llama2-7b-chat$^\dagger$" not in kept
    top = rendered["top_components"]
    assert r"\texttt{L18H9ATN} ({}\ensuremath{-}0.365)" in top
    assert "tab:top-components-ToyCurated" in top and "95\\% confidence interval over facts" in top
    heads = rendered["head_stats"]
    assert "0.196" in heads and "0.0086" in heads and r"\ensuremath{-}1.22" in heads
    attack = rendered["attack"]
    assert r"\textvisiblespace{}San" in attack and r"\textless{}U+2603\textgreater{}" in attack
    assert r"95\%" in attack and r"15\%" in attack  # the paper's California example


def test_comparison_table_has_one_row_per_run_above_the_paper(tmp_path, reference):
    pairs = (("toy", "curated"), ("smollm2-135m-instruct", "curated"), ("toy", "other"))
    runs = _runs(tmp_path, pairs=pairs)
    _, rendered, _ = _render(runs, reference)
    table = rendered["comparison"]
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", table).group(1)
    rows = [line for line in table.splitlines() if line.rstrip().endswith("\\\\")]
    header, body = rows[0], rows[1:]
    assert len(body) == len(pairs) + 1  # one row per run, and the paper's
    for row in rows:
        assert row.count("&") == len(spec) - 1, row
    columns = [c.strip() for c in header.rstrip(" \\").split("&")]
    for name in (
        "Model",
        "Type",
        "Kept",
        "Total effect",
        "$N^*$ (share)",
        "$k_{90}$ (share)",
        "Heads",
        "Promotive",
        "Top suppressor",
        "Top promotive",
        "Attack $-$ control",
    ):
        assert name in columns, name
    cells = {c: [r.split("&")[columns.index(c)].strip() for r in body] for c in columns}
    assert cells["Model"][1] == "smollm2-135m-instruct (curated)"
    assert cells["Model"][2] == "toy (other)" and "Llama-2-7b-chat" in cells["Model"][3]
    assert cells["Type"] == ["llama"] * 4
    assert cells["Kept"][3] == "4251 / 14002"
    assert cells["$N^*$ (share)"][3] == r"35 (3.3\%)"  # 35 of 1057
    promotive = runs[0].summary["n_promotive_significant"]
    assert cells["Promotive"][0] == str(promotive) and promotive > 0
    assert cells["Top promotive"][0] == rf"\texttt{{{runs[0].summary['top_promotive'][0]}}}"
    assert cells["Top promotive"][3] == "--"  # the paper names none


def _families(findings_tex: str) -> str:
    """The body of findings.tex's \\FindingFamilies (its last command), whitespace collapsed."""
    return " ".join(findings_tex.split(r"\newcommand{\FindingFamilies}")[1].split())


def test_the_paper_shape_needs_suppression_a_small_circuit_heads_and_waluigi():
    paper_like = {
        "suppresses": True,
        "n_star": 35,
        "n_star_frac": 35 / 1057,
        "n_star_degenerate": False,
        "head_share": 0.8,
        "n_promotive": 33,
    }
    assert T.mechanism_shape(paper_like) == {"same": True, "missing": None}
    for change, missing in (
        ({"suppresses": False}, "no_suppression"),
        ({"n_star_degenerate": True}, "degenerate_n_star"),
        ({"n_star": None, "n_star_frac": None}, "no_n_star"),
        ({"n_star_frac": 0.2}, "large_n_star"),
        ({"head_share": 0.3}, "not_heads"),
        ({"n_promotive": 0}, "no_promotive"),
    ):
        assert T.mechanism_shape(paper_like | change) == {"same": False, "missing": missing}


def test_every_way_to_miss_the_shape_is_worded_in_the_paper():
    template = (TEMPLATES / "findings.tex.j2").read_text()
    base = {
        "suppresses": True,
        "n_star": 35,
        "n_star_frac": 0.03,
        "n_star_degenerate": False,
        "head_share": 0.8,
        "n_promotive": 3,
    }
    misses = {
        T.mechanism_shape(base | change)["missing"]
        for change in (
            {"suppresses": False},
            {"n_star": None},
            {"n_star_degenerate": True},
            {"n_star_frac": 0.5},
            {"head_share": 0.1},
            {"n_promotive": 0},
        )
    }
    assert len(misses) == 6
    for key in misses:
        assert f"'{key}': '" in template, key


def test_the_paper_shape_is_tested_family_by_family(tmp_path, reference):
    pairs = (("smollm2-135m-instruct", "curated"), ("qwen2.5-coder-0.5b-instruct", "curated"))
    runs = [
        T.load_run(model, "curated", card=paths.pop("card"), **paths)
        for i, (model, _) in enumerate(pairs)
        for paths in [
            write_synthetic_run(
                tmp_path / f"run{i}",
                model,
                "curated",
                seed=i,
                n_star=5 if i == 0 else None,
                total=None if i == 0 else -0.3,
                model_type=("llama", "qwen2")[i],
            )
        ]
    ]
    context, rendered, _ = _render(runs, reference)
    first = context["runs"][0]["shape"]
    assert context["runs"][1]["shape"] == {"same": False, "missing": "no_suppression"}
    families = context["families"]
    assert [f["family"] for f in families] == ["llama", "qwen2"]
    text = _families(rendered["findings"])
    assert "qwen2: qwen2.5-coder-0.5b-instruct does not, with no clear suppression (" in text
    assert ("appears in llama only" in text) is first["same"]
    assert ("No model of this run shows" in text) is not first["same"]
    # One family: no comparison is claimed.
    _, rendered, _ = _render(runs[:1], reference)
    assert "compares no families" in _families(rendered["findings"])


def test_degenerate_n_star_leads_with_k90(tmp_path, reference):
    runs = _runs(tmp_path, n_star=37, degenerate=True)
    _, rendered, _ = _render(runs, reference)
    table = rendered["n_star"]
    header = next(line for line in table.splitlines() if line.strip().startswith("Model &"))
    assert header.index("k_{90}") < header.index("$N^*$")
    assert r"$^\ddagger$" in table and "less than 5\\% of it" in table
    sentence = _finding(rendered["findings"], "ToyCuratedFindingNStar")
    assert "not comparable" in sentence and r"\ToyCuratedKNinety{}" in sentence
    assert "passes the total effect" not in sentence
    assert r"\ToyCuratedNStarReason{}" in sentence
    abstract = _finding(rendered["findings"], "ToyCuratedFindingAbstract")
    assert "degenerate" in abstract and "account for it" not in abstract
    # A clear N* is stated as found, beside the paper's.
    _, rendered, _ = _render(_runs(tmp_path / "clear", n_star=5), reference)
    sentence = _finding(rendered["findings"], "ToyCuratedFindingNStar")
    assert "passes the total effect" in sentence and r"\PaperLlamaTwoSevenBChatNStar{}" in sentence


def test_negative_total_effect_is_reported_as_no_suppression(tmp_path, reference):
    # SmolLM2-135M raises the forbidden answer's probability.
    runs = _runs(tmp_path, pairs=(("smollm2-135m-instruct", "curated"),), n_star=None, total=-0.8)
    runs[0].summary.update(k50=None, k80=None, k90=None)
    context, rendered, macros = _render(runs, reference)
    numbers = context["runs"][0]["numbers"]
    assert not numbers["suppresses"] and not numbers["total_effect_positive"]
    assert macros["TotalEffect"] == r"\ensuremath{-}0.80"
    findings = rendered["findings"]
    prefix = "SmollmTwoOneThreeFiveMInstructCurated"
    total = _finding(findings, prefix + "FindingTotal")
    assert "does not suppress the forbidden answer" in total and "raises" in total
    assert rf"\{prefix}TotalEffect{{}}" in total
    assert "undefined" in _finding(findings, prefix + "FindingNStar")
    abstract = _finding(findings, prefix + "FindingAbstract")
    assert "does not suppress" in abstract and "drop by" not in abstract
    row = next(
        line for line in rendered["comparison"].splitlines() if line.strip().startswith("smollm2")
    )
    assert row.count("undef.") == 2  # N* and k90
    assert "undef." in rendered["n_star"]


def _heads_with(run: T.Run, top_ov: float, rest_ov: float, top_attn: float, rest_attn: float):
    rng = np.random.default_rng(3)
    heads = run.heads.copy()
    top = heads["rank"].rank(method="first") <= 3
    heads["ov_score"] = np.where(top, top_ov, rest_ov) + 0.05 * rng.standard_normal(len(heads))
    heads["attn_forbidden_c"] = np.where(top, top_attn, rest_attn) + 0.005 * rng.standard_normal(
        len(heads)
    )
    run.heads = heads


def test_head_and_attack_claims_follow_the_intervals(tmp_path, reference):
    run = _runs(tmp_path)[0]
    _heads_with(run, top_ov=-1.2, rest_ov=0.1, top_attn=0.2, rest_attn=0.01)
    _, rendered, _ = _render([run], reference)
    findings = rendered["findings"]
    assert "suppress the token they read more" in _finding(findings, "ToyCuratedFindingOV")
    assert "more than the other heads do" in _finding(findings, "ToyCuratedFindingAttn")
    assert "more than the control" in _finding(findings, "ToyCuratedFindingAttack")
    assert "the paper's heuristic" in _finding(findings, "ToyCuratedFindingAbstract")
    # The organism's case: no OV contrast (-0.004 vs +0.010), attention and attack no better.
    _heads_with(run, top_ov=-0.004, rest_ov=0.010, top_attn=0.02, rest_attn=0.02)
    table = io.read_parquet(
        tmp_path / "run0" / "results" / "toy" / "curated" / "attack_self_insertion.parquet"
    )
    table.loc[table["variant"] == "attack", "delta_logodds_log10"] = table.loc[
        table["variant"] == "control", "delta_logodds_log10"
    ].to_numpy() + np.linspace(-0.1, 0.1, 12)
    run.attack |= attack_contrast(table)  # the attack step's summary of this table
    _, rendered, _ = _render([run], reference)
    findings = rendered["findings"]
    ov = _finding(findings, "ToyCuratedFindingOV")
    assert "We do not find this" in ov and r"\PaperLlamaTwoSevenBChatTopHeadsOv{}" in ov
    assert "suppress the token they read more" not in ov
    assert "We do not find them clearly higher" in _finding(findings, "ToyCuratedFindingAttn")
    assert "does not beat the control" in _finding(findings, "ToyCuratedFindingAttack")
    abstract = _finding(findings, "ToyCuratedFindingAbstract")
    assert "do not find the paper's heuristic" in abstract and "suppress what they read" not in (
        abstract
    )


def test_top_components_table_is_top_n_star(tmp_path, reference):
    context = T.paper_context(_runs(tmp_path, n_star=5), reference, top_k=10, top_n=40)
    assert [r["position"] for r in context["runs"][0]["suppressive"]] == [1, 2, 3, 4, 5]
    context = T.paper_context(_runs(tmp_path / "b", n_star=None), reference, top_k=10, top_n=7)
    assert len(context["runs"][0]["suppressive"]) == 7  # N* not reached: the first top_n


def test_noise_components_are_not_promotive(tmp_path):
    run = _runs(tmp_path)[0]
    comps = run.components
    biggest = comps["mean_log10"].idxmax()
    comps.loc[biggest, "within_noise"] = True
    assert comps.loc[biggest, "component"] not in set(T.top_promotive(comps, 40)["component"])


def test_missing_numbers_render_as_dashes(tmp_path, reference):
    run = _runs(tmp_path, n_star=None)[0]
    run.summary.update(n_star_ci=[None, None], k50=None, k90=None, n_star_heads=None)
    run.inference["total_effect_std_log10"] = None
    run.attack["example"] = {}
    run.attack["mean_delta_logodds_log10"] = None
    run.attack |= attack_contrast(None)
    run.heads = run.heads.iloc[:0]
    _, rendered, macros = _render([run], reference)
    assert "[--, --]" in rendered["n_star"]
    assert r"\pm$ --" in rendered["kept_facts"]
    assert "(no example)" in rendered["attack"]
    assert macros["NStar"] == macros["KNinety"] == macros["TopHeadsOv"] == "--"
    assert macros["AttackDelta"] == macros["ExampleAnswer"] == "--"


def test_unknown_model_without_reference_has_no_paper_numbers(tmp_path):
    _, rendered, macros = _render(_runs(tmp_path), {"models": {}})
    assert r"$^\dagger$" not in rendered["kept_facts"]
    assert "paper found" not in rendered["findings"]


# ---------------------------------------------------------------------------
# the steps and paper/main.tex


def _tables_job(tmp_path, pairs):
    files = {role: [] for role in paper_steps.RUN_INPUTS}
    cards = {}
    for i, (model, dataset) in enumerate(pairs):
        paths = write_synthetic_run(tmp_path, model, dataset, seed=i, figures=True)
        cards[model] = str(paths.pop("card"))
        for role in paper_steps.RUN_INPUTS:
            files[role].append(str(paths[role]))
    out = tmp_path / "results" / "paper"
    outputs = {name: str(out / "tables" / f"{name}.tex") for name in TEMPLATE_NAMES}
    outputs["findings"] = str(out / "findings.tex")
    outputs["values"] = str(out / "values.tex")
    job = SimpleNamespace(
        input=SimpleNamespace(
            **files,
            cards=list(cards.values()),
            reference=str(REFERENCE),
            templates=[str(TEMPLATES / f"{n}.tex.j2") for n in TEMPLATE_NAMES],
        ),
        output=SimpleNamespace(**outputs),
        params=SimpleNamespace(
            models=[m for m, _ in pairs], datasets=[d for _, d in pairs], top_k=3, top_n=40
        ),
        wildcards=SimpleNamespace(),
        log=[],
    )
    return job, outputs


def _sources_job(tmp_path, outputs, first):
    model, dataset = first
    figures = [
        str(tmp_path / "results" / model / dataset / "figures" / f"{n}.pdf") for n in FIGURE_NAMES
    ]
    tables = [outputs[n] for n in TEMPLATE_NAMES if n != "findings"]
    return SimpleNamespace(
        input=SimpleNamespace(
            main=str(MAIN_TEX),
            values=outputs["values"],
            findings=outputs["findings"],
            tables=tables,
            figures=figures,
        ),
        output=[str(tmp_path / "results" / "paper" / "source")],
        params=SimpleNamespace(),
        wildcards=SimpleNamespace(),
        log=[],
    )


def test_tables_step_writes_every_output(tmp_path):
    job, outputs = _tables_job(tmp_path, [("toy", "curated"), ("toy", "counterfact")])
    paper_steps.tables(job)
    for path in outputs.values():
        assert Path(path).stat().st_size > 0
    macros = L.parse_values_tex(Path(outputs["values"]).read_text())
    assert "ToyCounterfactNStar" in macros and macros["NParams"] == "12345"
    # A template without an output of its name is an error that names the fix.
    job.input.templates = [*job.input.templates, str(tmp_path / "extra.tex.j2")]
    shutil.copy(TEMPLATES / "kept_facts.tex.j2", tmp_path / "extra.tex.j2")
    with pytest.raises(ValueError, match="no output named 'extra'"):
        paper_steps.tables(job)


def test_paper_sources_stage_everything_main_tex_needs(tmp_path):
    job, outputs = _tables_job(tmp_path, [("toy", "curated")])
    paper_steps.tables(job)
    sources = _sources_job(tmp_path, outputs, ("toy", "curated"))
    paper_steps.paper_sources(sources)
    staged = Path(sources.output[0])
    assert (staged / "main.tex").exists() and (staged / "findings.tex").exists()
    assert paper_steps.missing_sources(staged) == []
    # A figure main.tex includes but no input provides: fail, naming it, keep the old output.
    sources.input.figures = sources.input.figures[1:]
    with pytest.raises(FileNotFoundError, match=f"figures/{FIGURE_NAMES[0]}.pdf"):
        paper_steps.paper_sources(sources)
    assert (staged / "main.tex").exists()


def test_main_tex_uses_only_defined_macros(tmp_path, reference):
    body = _strip_comments(MAIN_TEX.read_text())
    _, rendered, macros = _render(_runs(tmp_path), reference)
    defined = set(macros) | set(re.findall(r"\\newcommand\{?\\([A-Za-z]+)", rendered["findings"]))
    own = set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", body))
    used = set(re.findall(r"\\([A-Za-z]+)", body))
    # Capitalised macros are ours: they must all come from values.tex or findings.tex.
    unknown = {m for m in used if m[0].isupper()} - defined - own
    assert not unknown, f"main.tex uses macros nobody defines: {sorted(unknown)}"
    # And the findings use only values.tex's macros (and main.tex's \comp, \word).
    used = set(re.findall(r"\\([A-Z][A-Za-z]+)", rendered["findings"]))
    assert used <= defined, sorted(used - defined)


def test_main_tex_types_no_numbers():
    body = _strip_comments(MAIN_TEX.read_text())
    for pattern in (
        r"\\(?:label|ref|input|includegraphics|usepackage|documentclass)(\[[^\]]*\])?\{[^}]*\}",
        r"\[[^\]]*\]",
        r"_\{\d+\}",
        r"\\log_\{10\}",
        r"Llama-2",
        r"95\\%",
        r"#\d",
        r"\bnc[01]\b",
        r"top-1",
        r"sha256",
    ):
        body = re.sub(pattern, "", body)
    digits = re.findall(r".{0,30}\d.{0,10}", body)
    assert not digits, f"numbers typed by hand in main.tex (use values.tex macros): {digits}"


def test_paper_fails_clearly_without_latex(tmp_path, monkeypatch):
    monkeypatch.setattr(paper_steps.shutil, "which", lambda name: None)
    job = SimpleNamespace(
        input=SimpleNamespace(sources=str(tmp_path / "source")),
        output=[str(tmp_path / "main.pdf")],
        params=SimpleNamespace(build_dir=str(tmp_path / "build")),
        log=[],
    )
    with pytest.raises(RuntimeError) as err:
        paper_steps.paper(job)
    message = str(err.value)
    assert "latexmk" in message and "apt-get install latexmk texlive-latex-base" in message
    assert "envs/latex.yaml" in message
    assert not (tmp_path / "build").exists()


def _dry_run(tmp_path: Path, path_dirs: list[str]) -> subprocess.CompletedProcess:
    work = copy_repo(tmp_path / "wf")
    (work / "paper.yaml").write_text("run:\n  paper: true\npaper:\n  tag: t\n")
    env = {"PATH": ":".join(path_dirs), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "paper.yaml"]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_without_tex_the_pdf_is_left_out_and_the_archive_kept(tmp_path):
    proc = _dry_run(tmp_path, [str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    if shutil.which("latexmk", path="/usr/bin:/bin") or shutil.which(
        "tectonic", path="/usr/bin:/bin"
    ):
        pytest.skip("TeX is installed system-wide; cannot hide it")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = proc.stdout + proc.stderr
    assert re.search(r"^archive\s+1", jobs, re.M) and re.search(r"^paper_sources\s+1", jobs, re.M)
    assert not re.search(r"^paper\s+1", jobs, re.M)
    # With TeX on PATH the PDF is a target again.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "latexmk").write_text("#!/bin/sh\nexit 0\n")
    (fake / "latexmk").chmod(0o755)
    proc = _dry_run(
        tmp_path / "with", [str(fake), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^paper\s+1", proc.stdout + proc.stderr, re.M)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed")
def test_paper_compiles(tmp_path):
    pairs = [("toy", "curated"), ("llama2-7b-chat", "counterfact")]
    job, outputs = _tables_job(tmp_path, pairs)
    paper_steps.tables(job)
    sources = _sources_job(tmp_path, outputs, pairs[0])
    paper_steps.paper_sources(sources)
    pdf = tmp_path / "main.pdf"
    paper_steps.paper(
        SimpleNamespace(
            input=SimpleNamespace(sources=sources.output[0]),
            output=[str(pdf)],
            params=SimpleNamespace(build_dir=str(tmp_path / "build"), timeout=300),
            log=[],
        )
    )
    assert pdf.read_bytes().startswith(b"%PDF")
    log = (tmp_path / "build" / "main.log").read_text(errors="replace")
    assert "Undefined control sequence" not in log and "Missing character" not in log
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
        assert "3.46" in text


@pytest.mark.parametrize("never, says", [(0.6, "a rule learnt for the words"), (2.1, "reaches")])
def test_organism_finding_states_the_effect_on_never_forbidden_answers(
    tmp_path, reference, never, says
):
    runs = _runs(tmp_path, pairs=(("toy", "curated"), ("smollm2-135m-instruct", "curated")))
    runs[0].card.update(
        n_facts_never_forbidden=68,
        frac_known_never_forbidden=0.99,
        total_effect_never_forbidden_log10=never,
    )
    context, rendered, macros = _render(runs, reference)
    organism = _finding(rendered["findings"], "ToyCuratedFindingOrganism")
    assert says in organism
    assert r"\ToyCuratedNNeverForbidden{}" in organism
    assert macros["ToyCuratedNeverForbiddenEffect"] == f"{never:.2f}"
    # a model that was not trained here gets no such sentence
    assert (
        _finding(rendered["findings"], "SmollmTwoOneThreeFiveMInstructCuratedFindingOrganism") == ""
    )


# ---------------------------------------------------------------------------
# The tables of a real run: the session's tiny run (tests/conftest.py).


def test_paper_sources_and_tables_of_the_tiny_run_need_no_tex(tiny_run):
    workdir, finished = tiny_run, tiny_run / RUN
    # The paper's sources, tables and findings for the finished run; no TeX involved.
    proc = snakemake(workdir, "results/paper/source")
    source = workdir / "results/paper/source"
    assert {"main.tex", "values.tex", "findings.tex"} <= {p.name for p in source.iterdir()}
    # The paper's 10 figures and the faithfulness section's 2.
    assert len(list((source / "figures").glob("*.pdf"))) == 12
    macros = dict(
        re.findall(r"^\\newcommand\{\\(\w+)\}\{(.*)\}$", (source / "values.tex").read_text(), re.M)
    )
    summary = io.read_json(finished / "summary.json")
    assert macros["NComponents"] == str(summary["n_components"])
    findings = (source / "findings.tex").read_text()
    if summary["n_star_degenerate"]:
        # N* past the curve, not reached, or undefined: never offered as comparable.
        phrases = ("not comparable", "nothing to compare", "undefined")
        assert any(p in findings for p in phrases), findings
    comparison = (source / "tables/comparison.tex").read_text()
    assert "tiny" in comparison and "Llama-2-7b-chat" in comparison
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "shipped_effect, says", [(-0.66, "copies the forbidden word"), (0.4, "has a total effect")]
)
def test_finetune_finding_compares_the_obedient_model_with_its_shipped_base_and_the_paper(
    tmp_path, reference, shipped_effect, says
):
    pairs = (("smollm2-135m-obedient", "curated"), ("smollm2-135m-instruct", "curated"))
    runs = _runs(tmp_path, pairs=pairs)
    runs[0].card.update(
        finetune={
            "base_model": "smollm2-135m-instruct",
            "train_seconds": 315.0,
            "seconds_per_step": 2.1,
            "n_excluded_trained": 243,
            "n_facts_never_taught": 178,
            "n_kept_never_taught": 75,
            "total_effect_never_taught_log10": 3.456,
        }
    )
    runs[1].summary.update(total_effect_log10=shipped_effect)
    context, rendered, macros = _render(runs, reference)
    finding = _finding(rendered["findings"], "SmollmTwoOneThreeFiveMObedientCuratedFindingFinetune")
    assert "smollm2-135m-instruct fine-tuned" in finding and says in finding
    assert r"\SmollmTwoOneThreeFiveMObedientCuratedNExcludedTrained{}" in finding
    assert macros["SmollmTwoOneThreeFiveMObedientCuratedNExcludedTrained"] == "243"
    assert macros["SmollmTwoOneThreeFiveMObedientCuratedNeverTaughtEffect"] == "3.46"
    assert ("made suppression win" in finding) == (shipped_effect < 0)
    # the first run's finding is also \FindingFinetune; a model not fine-tuned here has none
    assert r"\newcommand{\FindingFinetune}" in rendered["findings"]
    assert (
        _finding(rendered["findings"], "SmollmTwoOneThreeFiveMInstructCuratedFindingFinetune") == ""
    )
