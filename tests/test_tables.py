"""Tables, values.tex and the paper: rendered from small synthetic artifacts.

The artifacts are written the way the workflow writes them (same files, keys and
columns, provenance included), so these tests also pin the contract between the
analysis rules and the paper stage.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from forbidden_facts import io
from forbidden_facts import tables as T
from forbidden_facts.steps import paper as paper_steps

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "paper" / "templates"
MAIN_TEX = ROOT / "paper" / "main.tex"
PAPER_SMK = ROOT / "workflow" / "rules" / "paper.smk"
REFERENCE = ROOT / "config" / "paper_reference.yaml"

N_LAYERS, N_HEADS = 3, 4


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
        "n_kept": 30 + seed,
        "n_pairs": 2 * (30 + seed),
        "n_components": len(comps),
        "total_effect_log10": 3.456 + seed,
        "n_star": n_star,
        "n_star_heads": int((star["type"] == "head").sum()),
        "n_star_mlps": int((star["type"] == "mlp").sum()),
        "n_star_ci": [4.0, 7.0] if n_star else [None, None],
        "k50": 2,
        "k80": 3,
        "k90": 4,
        "k95": None,
        "top_component": top["component"],
        "top_component_mean_log10": float(top["mean_log10"]),
        "n_suppressive_significant": int((comps["role"] == "suppressive").sum()),
        "n_promotive_significant": int((comps["role"] == "promotive").sum()),
        "n_positive_mean": len(positive),
        "promotive_sum_log10": float(comps.loc[comps["role"] == "promotive", "mean_log10"].sum()),
        "positive_sum_log10": float(positive["mean_log10"].sum()),
        "top_promotive": positive["component"].tolist(),
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
    io.write_json(base / "attack_summary.json", attack, provenance=prov)
    card = {
        "model": model,
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
    paths = {role: base / name for role, name in T.RUN_FILES.items()}
    paths["card"] = root / "results" / model / "model_card.json"
    if figures:
        for name in paper_steps.PAPER_FIGURES:
            pdf = base / "figures" / f"{name}.pdf"
            pdf.parent.mkdir(parents=True, exist_ok=True)
            pdf.write_bytes(_minimal_pdf(name))
            (base / "figures" / f"{name}.png").write_bytes(b"\x89PNG fake " + name.encode())
    return paths


def _runs(tmp_path, pairs=(("toy", "curated"),), **kw) -> list[T.Run]:
    runs = []
    for i, (model, dataset) in enumerate(pairs):
        paths = write_synthetic_run(tmp_path, model, dataset, seed=i, **kw)
        runs.append(T.load_run(model, dataset, paths["inference"].parent, card=paths["card"]))
    return runs


@pytest.fixture()
def reference():
    return T.load_reference(REFERENCE)


def _number(tex: str) -> float:
    return float(tex.replace(r"\ensuremath{-}", "-").replace(r"\%", ""))


# ---------------------------------------------------------------------------
# formatting


def test_latex_escape_specials():
    assert T.latex_escape("L18H9ATN") == "L18H9ATN"
    assert T.latex_escape("L0_odd&name") == r"L0\_odd\&name"
    assert T.latex_escape("50% #1 $x {y}") == r"50\% \#1 \$x \{y\}"
    assert T.latex_escape("a~b^c\\d") == r"a\textasciitilde{}b\textasciicircum{}c\textbackslash{}d"
    assert T.latex_escape("\u2581San") == r"\textvisiblespace{}San"
    assert T.latex_escape("\u2603") == r"\textless{}U+2603\textgreater{}"
    assert T.latex_escape("llama2-7b-chat") == "llama2-7b-chat"
    assert T.latex_escape("--") == "-{}-"
    assert T.latex_escape(None) == "--"


def test_fmt_numbers_and_missing():
    assert T.fmt(None) == "--"
    assert T.fmt(float("nan")) == "--"
    assert T.fmt(pd.NA) == "--"
    assert T.fmt(np.int64(4251)) == "4251"
    assert T.fmt(-0.36512, 3) == r"\ensuremath{-}0.365"
    assert T.fmt(-0.0001, 2) == "0.00"
    assert T.fmt(0.9512, 1, percent=True) == r"95.1\%"
    assert T.pfmt(0.0086) == "0.0086"
    assert T.pfmt(0.15, percent=True) == r"15\%"
    assert T.pfmt(-2.5) == r"\ensuremath{-}2.5"


def test_slug_letters_only():
    assert T.slug("llama2-7b-chat") == "LlamaTwoSevenBChat"
    assert T.slug("llama2-70b-chat") == "LlamaTwoSevenZeroBChat"
    assert re.fullmatch(r"[A-Za-z]+", T.slug("my_data.v2"))


# ---------------------------------------------------------------------------
# values.tex


def test_values_tex_matches_artifacts(tmp_path, reference):
    runs = _runs(tmp_path, pairs=(("toy", "curated"), ("llama2-7b-chat", "counterfact")))
    text = T.values_tex(runs, reference)
    macros = T.parse_values_tex(text)
    assert text.count(r"\newcommand") == len(macros)
    assert all(re.fullmatch(r"[A-Za-z]+", name) for name in macros)
    inf, summ, att = runs[0].inference, runs[0].summary, runs[0].attack
    heads = runs[0].heads
    top = heads.nsmallest(10, "rank")
    rest = heads.drop(top.index)
    expected = {
        "TotalEffect": (inf["total_effect_log10"], 2),
        "TotalEffectStd": (inf["total_effect_std_log10"], 2),
        "NKept": (inf["n_kept"], 0),
        "NFacts": (inf["n_facts"], 0),
        "NStar": (summ["n_star"], 0),
        "NStarHeads": (summ["n_star_heads"], 0),
        "NStarMlps": (summ["n_star_mlps"], 0),
        "KNinety": (summ["k90"], 0),
        "TopComponentMean": (summ["top_component_mean_log10"], 3),
        "NPromotive": (summ["n_promotive_significant"], 0),
        "AttackDelta": (att["mean_delta_logodds_log10"], 2),
        "ControlDelta": (att["control_mean_delta_logodds_log10"], 2),
        "AttackFlipped": (100 * att["frac_top1_flipped"], 1),
        "TopHeadsOV": (top["ov_score"].mean(), 2),
        "OtherHeadsOV": (rest["ov_score"].mean(), 2),
        "TopHeadsAttn": (top["attn_forbidden_c"].mean(), 4),
        "OtherHeadsAttn": (rest["attn_forbidden_c"].mean(), 4),
        "PaperTotalEffect": (3.05, 2),
        "PaperNStar": (35, 0),
        "PaperNKept": (4251, 0),
        "PaperTopHeadsAttn": (0.196, 3),
    }
    for name, (value, digits) in expected.items():
        assert _number(macros[name]) == pytest.approx(round(value, digits), abs=10**-digits / 2), (
            name
        )
    assert macros["KNinetyFive"] == "--"  # k95 is null in the summary
    assert macros["TopComponent"] == T.latex_escape(summ["top_component"])
    assert macros["ModelId"] == T.latex_escape(runs[0].provenance["model_id"])
    assert macros["DatasetSha"] == "ab" * 6
    assert macros["CodeVersion"] == "v0.1-3-gdeadbee"
    # Every run also gets prefixed macros; the unprefixed ones are the first run's.
    assert macros["ToyCuratedTotalEffect"] == macros["TotalEffect"]
    assert _number(macros["LlamaTwoSevenBChatCounterfactTotalEffect"]) == pytest.approx(
        4.46, abs=0.005
    )
    assert macros["PaperLlamaTwoOneThreeBChatTotalEffect"] == "4.26"
    assert macros["PaperLlamaTwoOneThreeBChatNKept"] == "--"
    # The toy is compared with the 7b numbers, and the text says so.
    assert "Llama-2-7b-chat" in macros["PaperNote"]
    assert T.parse_values_tex(T.values_tex(runs[1:], reference))["PaperNote"] == ""


def test_values_rejects_colliding_slugs(tmp_path, reference):
    runs = _runs(tmp_path, pairs=(("a-b", "d"), ("a_b", "d")))
    with pytest.raises(ValueError, match="macro prefix"):
        T.values(runs, reference)


# ---------------------------------------------------------------------------
# tables


def test_render_tables(tmp_path, reference):
    runs = _runs(tmp_path, pairs=(("toy", "curated"), ("llama2-7b-chat", "counterfact")))
    rendered = T.render_tables(runs, reference, TEMPLATES, top_k=3, top_n=40)
    assert set(rendered) == set(T.TABLES)
    for name, text in rendered.items():
        assert r"\toprule" in text and r"\bottomrule" in text, name
        assert "(((" not in text and "((*" not in text, name
        assert text.count(r"\begin{table}") == text.count(r"\end{table}"), name
        # Braces balance once escaped braces are dropped.
        bare = text.replace(r"\{", "").replace(r"\}", "")
        assert bare.count("{") == bare.count("}"), name
    for name in ("kept_facts", "n_star", "head_stats"):
        assert "paper" in rendered[name], name
    kept = rendered["kept_facts"]
    assert "14002" in kept and "4251" in kept and "3.05" in kept and "1.32" in kept
    assert r"toy$^\dagger$" in kept  # the toy is compared with another model: flagged
    assert r"llama2-7b-chat$^\dagger$" not in kept  # matched by name, on CounterFact
    assert "3.46" in kept and "1.23" in kept  # ours
    top = rendered["top_components"]
    assert r"L0\_odd\&name" in top or T.latex_escape(runs[0].summary["top_component"]) in top
    assert r"\texttt{L18H9ATN} ({}\ensuremath{-}0.365)" in top
    assert "tab:top-components-ToyCurated" in top and "tab:promotive" in top
    heads = rendered["head_stats"]
    assert "0.196" in heads and "0.0086" in heads and r"\ensuremath{-}1.22" in heads
    attack = rendered["attack"]
    assert r"\textvisiblespace{}San" in attack and r"\textless{}U+2603\textgreater{}" in attack
    assert (
        r"50\%\_\&" in attack and r"\textasciitilde{}\textasciicircum{}\textbackslash{}" in attack
    )
    assert r"95\%" in attack and r"15\%" in attack  # the paper's California example


def test_top_components_table_is_top_n_star(tmp_path, reference):
    runs = _runs(tmp_path, n_star=5)
    ctx = T.top_components_context(runs, reference, top_n=40)
    rows = ctx["runs"][0]["suppressive"]
    assert [r["position"] for r in rows] == [1, 2, 3, 4, 5]
    runs = _runs(tmp_path, n_star=None)
    ctx = T.top_components_context(runs, reference, top_n=7)
    assert len(ctx["runs"][0]["suppressive"]) == 7  # N* not reached: the first top_n


def test_missing_numbers_render_as_dashes(tmp_path, reference):
    runs = _runs(tmp_path, n_star=None)
    run = runs[0]
    run.summary.update(n_star_ci=[None, None], k50=None, k90=None, n_star_heads=None)
    run.inference["total_effect_std_log10"] = None
    run.attack["example"] = {}
    run.attack["mean_delta_logodds_log10"] = None
    run.heads = run.heads.iloc[:0]
    rendered = T.render_tables(runs, reference, TEMPLATES)
    assert "& -- & [--, --]" in rendered["n_star"]
    assert r"\pm$ --" in rendered["kept_facts"]
    assert "(no example)" in rendered["attack"]
    macros = T.values(runs, reference)
    assert (
        macros["NStar"]
        == macros["KNinety"]
        == macros["TopHeadsOV"]
        == macros["AttackDelta"]
        == "--"
    )
    assert macros["ExampleAnswer"] == "--"


def test_unknown_model_without_reference_has_no_paper_numbers(tmp_path):
    runs = _runs(tmp_path)
    rendered = T.render_tables(runs, {"models": {}}, TEMPLATES)
    assert r"$^\dagger$" not in rendered["kept_facts"]
    assert T.values(runs, {"models": {}})["PaperTotalEffect"] == "--"


# ---------------------------------------------------------------------------
# the steps and paper/main.tex


def _tables_job(tmp_path, pairs, models):
    files = {role: [] for role in T.RUN_FILES}
    for (model, dataset), i in zip(pairs, range(len(pairs)), strict=True):
        paths = write_synthetic_run(tmp_path, model, dataset, seed=i, figures=True)
        for role in T.RUN_FILES:
            files[role].append(str(paths[role]))
    out = tmp_path / "results" / "paper"
    outputs = {name: str(out / "tables" / f"{name}.tex") for name in T.TABLES}
    outputs["values"] = str(out / "values.tex")
    job = SimpleNamespace(
        input=SimpleNamespace(
            **files,
            cards=[str(tmp_path / "results" / m / "model_card.json") for m in models],
            reference=str(REFERENCE),
            templates=[str(TEMPLATES / f"{n}.tex.j2") for n in T.TABLES],
        ),
        output=SimpleNamespace(**outputs),
        params=SimpleNamespace(pairs=[list(p) for p in pairs], models=models, top_k=3, top_n=40),
        wildcards=SimpleNamespace(),
        log=[],
    )
    return job, outputs


def _paper_job(tmp_path, outputs, first):
    model, dataset = first
    figures = [
        str(tmp_path / "results" / model / dataset / "figures" / f"{n}.pdf")
        for n in paper_steps.PAPER_FIGURES
    ]
    return SimpleNamespace(
        input=SimpleNamespace(
            main=str(MAIN_TEX),
            values=outputs["values"],
            tables=[outputs[n] for n in T.TABLES],
            figures=figures,
        ),
        output=[str(tmp_path / "results" / "paper" / "main.pdf")],
        params=SimpleNamespace(
            build_dir=str(tmp_path / "results" / "paper" / "build"), timeout=300
        ),
        wildcards=SimpleNamespace(),
        log=[],
    )


def test_tables_step_writes_every_output(tmp_path):
    pairs = [("toy", "curated"), ("toy", "counterfact")]
    job, outputs = _tables_job(tmp_path, pairs, ["toy"])
    paper_steps.tables(job)
    for path in outputs.values():
        assert Path(path).stat().st_size > 0
    macros = T.parse_values_tex(Path(outputs["values"]).read_text())
    assert "ToyCounterfactNStar" in macros and macros["NParams"] == "12345"


def _strip_comments(tex: str) -> str:
    return re.sub(r"(?<!\\)%.*", "", tex)


def test_main_tex_uses_only_provided_files_and_defined_macros(tmp_path, reference):
    tex = MAIN_TEX.read_text()
    body = _strip_comments(tex)
    # \input and \includegraphics: exactly what rule `paper` stages (paper_steps.stage_paper).
    inputs = re.findall(r"\\input\{([^}]*)\}", body)
    graphics = re.findall(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]*)\}", body)
    provided_tables = {f"tables/{n}.tex" for n in T.TABLES}
    assert set(inputs) <= provided_tables | {"values.tex"} and "values.tex" in inputs
    assert provided_tables <= set(inputs)
    provided_figures = {f"figures/{n}.pdf" for n in paper_steps.PAPER_FIGURES}
    assert set(graphics) == provided_figures
    # ...and paper.smk passes the same tables and figures.
    smk = PAPER_SMK.read_text()
    for name in T.TABLES:
        assert (
            f'"{name}"' in smk.split("PAPER_FIGURES")[0]
            and f"results/paper/tables/{name}.tex" in smk
        )
    for name in paper_steps.PAPER_FIGURES:
        assert f'"{name}",' in smk
    # Every \includegraphics has a "% produced by rule <name>" comment on the line above, naming a real rule.
    rules = set(
        re.findall(
            r"^rule (\w+):",
            "".join(p.read_text() for p in PAPER_SMK.parent.glob("*.smk")),
            flags=re.M,
        )
    )
    lines = tex.splitlines()
    for i, line in enumerate(lines):
        if r"\includegraphics" in line:
            m = re.search(r"% produced by rule (\w+)", lines[i - 1])
            assert m, f"line {i + 1}: no '% produced by rule' comment above {line.strip()}"
            name = re.search(r"figures/(\w+)\.pdf", line).group(1)
            assert m.group(1) == paper_steps.PAPER_FIGURES[name] and m.group(1) in rules
        if r"\input{tables/" in line:
            assert "% produced by rule tables" in line
    # Every macro main.tex uses is LaTeX's, main.tex's own, or defined by values_tex.
    runs = _runs(tmp_path)
    defined = set(T.values(runs, reference))
    own = set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", body))
    used = set(re.findall(r"\\([A-Za-z]+)", body))
    latex = {
        "documentclass",
        "usepackage",
        "input",
        "newcommand",
        "title",
        "author",
        "date",
        "begin",
        "end",
        "maketitle",
        "section",
        "label",
        "emph",
        "word",
        "frac",
        "mathrm",
        "log",
        "to",
        "texttt",
        "ref",
        "centering",
        "includegraphics",
        "linewidth",
        "textheight",
        "caption",
        "hfill",
        "clearpage",
        "paragraph",
        "dots",
        "pm",
        "comp",
    }
    unknown = used - defined - own - latex
    assert not unknown, f"main.tex uses macros that values.tex does not define: {sorted(unknown)}"
    # Capitalised macros are ours: they must all come from values.tex.
    assert {m for m in used if m[0].isupper()} <= defined


def test_main_tex_types_no_numbers():
    body = _strip_comments(MAIN_TEX.read_text())
    for pattern in (
        r"\\(?:label|ref|input|includegraphics|usepackage|documentclass)(\[[^\]]*\])?\{[^}]*\}",
        r"\[[^\]]*\]",
        r"_\{\d+\}",
        r"\\log_\{10\}",
        r"Llama-2",
        r"95\\%",
        # names, not results: macro arguments, prompt kinds, top-1, sha256
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
    job = _paper_job(tmp_path, {n: "x" for n in (*T.TABLES, "values")}, ("toy", "curated"))
    with pytest.raises(RuntimeError) as err:
        paper_steps.paper(job)
    message = str(err.value)
    assert "latexmk" in message and "apt-get install latexmk texlive-latex-base" in message
    assert "envs/latex.yaml" in message and "rest of the DAG is unaffected" in message
    assert not (tmp_path / "results" / "paper" / "build").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed")
def test_paper_compiles(tmp_path):
    pairs = [("toy", "curated"), ("llama2-7b-chat", "counterfact")]
    job, outputs = _tables_job(tmp_path, pairs, ["toy", "llama2-7b-chat"])
    paper_steps.tables(job)
    paper_job = _paper_job(tmp_path, outputs, pairs[0])
    paper_steps.paper(paper_job)
    pdf = Path(paper_job.output[0])
    assert pdf.read_bytes().startswith(b"%PDF")
    log = (Path(paper_job.params.build_dir) / "main.log").read_text(errors="replace")
    assert "undefined" not in log.lower() or "Reference" not in log, "unresolved references"
    assert "Missing character" not in log
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
        assert "3.46" in text
