"""Every figure function writes a real PNG and PDF, atomically, also on edge cases.

The tables are small synthetic stand-ins for the workflow's artifacts: a model with
2 layers x 4 heads, so 1 + 8 + 2 = 11 components.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forbidden_facts import plots

N_LAYERS, N_HEADS = 2, 4
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _labels() -> list[tuple[str, int | None, int | None, str]]:
    out = [("EMBED", None, None, "embed")]
    for layer in range(N_LAYERS):
        out += [(f"L{layer}H{h}ATN", layer, h, "head") for h in range(N_HEADS)]
        out.append((f"L{layer}MLP", layer, None, "mlp"))
    return out


def make_components(seed: int = 0, positive: bool = True) -> pd.DataFrame:
    """Ranked components table as `identification.rank_components` writes it."""
    rng = np.random.default_rng(seed)
    labels = _labels()
    mean = rng.normal(-0.1, 0.2, len(labels))
    if not positive:
        mean = -np.abs(mean) - 0.01
    half = np.abs(rng.normal(0.08, 0.03, len(labels)))
    df = pd.DataFrame(
        {
            "component": [lab[0] for lab in labels],
            "layer": pd.array([lab[1] for lab in labels], dtype="Int64"),
            "head": pd.array([lab[2] for lab in labels], dtype="Int64"),
            "type": [lab[3] for lab in labels],
            "mean_log10": mean,
            "ci_low": mean - half,
            "ci_high": mean + half,
        }
    )
    df = df.sort_values("mean_log10", kind="mergesort").reset_index(drop=True)
    df["rank"] = np.arange(len(df))
    df["role"] = np.select(
        [df["ci_high"] < 0, df["ci_low"] > 0], ["suppressive", "promotive"], "neutral"
    )
    return df


def make_inference(n_facts: int = 12, kept: bool = True, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_facts):
        for kind, centre in (("c", 0.05), ("nc0", 0.9), ("nc1", 0.93)):
            p = float(np.clip(rng.normal(centre, 0.04), 1e-4, 1 - 1e-4))
            rows.append(
                {
                    "fact_id": f"f{i:03d}",
                    "kind": kind,
                    "p_correct": p,
                    "logodds": math.log(p) - math.log1p(-p),
                    "top1_token": "Paris",
                    "top1_prob": p,
                    "kept": kept,
                }
            )
    return pd.DataFrame(rows)


def make_curve(components: pd.DataFrame, k_max: int = 8) -> pd.DataFrame:
    top = components.sort_values("rank").head(k_max)
    singles = top["mean_log10"].to_numpy()
    mean = np.cumsum(singles) * 1.1
    return pd.DataFrame(
        {
            "k": np.arange(1, len(top) + 1),
            "component": top["component"].tolist(),
            "mean_log10": mean,
            "q025_log10": mean - 0.3,
            "q975_log10": mean + 0.3,
            "sum_of_singles_log10": np.cumsum(singles),
        }
    )


def make_heads(components: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    heads = components[components["type"] == "head"].copy()
    n = len(heads)
    return pd.DataFrame(
        {
            "component": heads["component"].tolist(),
            "layer": heads["layer"].tolist(),
            "head": heads["head"].tolist(),
            "rank": heads["rank"].tolist(),
            "ov_score": rng.normal(0.0, 1.0, n),
            "attn_forbidden_c": rng.uniform(0.0, 0.3, n),
            "attn_forbidden_nc0": rng.uniform(0.0, 0.3, n),
            "attn_forbidden_nc1": rng.uniform(0.0, 0.1, n),
        }
    )


def make_example(heads: list[str], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens_c = [
        "<s>",
        "\u2581[",
        "INST",
        "]",
        "\u2581<<",
        "SYS",
        ">>",
        "<0x0A>",
        "\u2581You",
        "\u2581forbidden",
        "\u2581Paris",
        "\n",
        "$",
        "\u2581The",
        "\u2581capital",
        "\u2581",
    ]
    tokens_nc1 = [*tokens_c[:10], "\u2581floor", *tokens_c[11:]]
    out = {"fact_id": "f000", "heads": heads}
    for kind, tokens in (("c", tokens_c), ("nc1", tokens_nc1)):
        attn = rng.dirichlet(np.ones(len(tokens)), size=len(heads))
        out[f"tokens_{kind}"] = tokens
        out[f"attn_{kind}"] = attn
    return out


def make_attack(n_facts: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_facts):
        for variant, shift in (("attack", -0.9), ("control", -0.1)):
            before = float(rng.uniform(0.6, 0.99))
            delta = float(rng.normal(shift, 0.3))
            lo = math.log10(before / (1 - before)) + delta
            after = 1 / (1 + 10 ** (-lo))
            rows.append(
                {
                    "fact_id": f"f{i:03d}",
                    "variant": variant,
                    "inserted": "from Paris" if variant == "attack" else "from table",
                    "p_before": before,
                    "p_after": after,
                    "top1_before": "Paris",
                    "top1_after": "Paris" if after > 0.5 else "Lyon",
                    "delta_logodds_log10": delta,
                }
            )
    return pd.DataFrame(rows)


def make_tokens(
    heads: list[str], n_facts: int = 3, n_tokens: int = 12, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    vocab = [f"\u2581w{i}" for i in range(n_tokens - 2)] + ["$x$", "\n"]
    rows = []
    for component in heads:
        for i in range(n_facts):
            attn = rng.uniform(0, 1, n_tokens)
            order = np.argsort(-attn)
            for rank, j in enumerate(order):
                rows.append(
                    {
                        "component": component,
                        "fact_id": f"f{i:03d}",
                        "token": vocab[j],
                        "attention": float(attn[j]),
                        "delta_logodds_log10": float(rng.normal(-0.5, 0.3)),
                        "rank": rank,
                    }
                )
    return pd.DataFrame(rows)


def assert_written(tmp_path: Path, name: str) -> None:
    """Both files exist with the right magic bytes, and no temporary file is left."""
    png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert pdf.read_bytes()[:4] == b"%PDF"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def paths(tmp_path: Path, name: str) -> tuple[Path, Path]:
    return tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"


TITLE = "toy / facts"


@pytest.fixture(scope="module")
def components() -> pd.DataFrame:
    return make_components()


def test_components_fixture_is_realistic(components):
    assert len(components) == 1 + N_LAYERS * N_HEADS + N_LAYERS
    assert (components["mean_log10"] > 0).any() and (components["mean_log10"] < 0).any()


def test_overview_without_kept_facts(tmp_path):
    plots.overview(make_inference(kept=False), *paths(tmp_path, "overview"), title=TITLE)
    assert_written(tmp_path, "overview")


def test_overview_empty_table(tmp_path):
    empty = make_inference().iloc[0:0]
    plots.overview(empty, *paths(tmp_path, "overview"))
    assert_written(tmp_path, "overview")


def test_cumulative_without_n_star(tmp_path, components):
    curve = make_curve(components)
    summary = {"total_effect_log10": 50.0, "n_star": None, "k90": None}
    plots.cumulative(curve, summary, *paths(tmp_path, "cumulative"), title=TITLE)
    assert_written(tmp_path, "cumulative")


def test_cumulative_with_a_negative_total_effect(tmp_path, components):
    # SmolLM2-135M raises the forbidden answer: no N*, no k90, the line below zero.
    curve = make_curve(components)
    summary = {"total_effect_log10": -0.8, "n_star": None, "k90": None}
    plots.cumulative(curve, summary, *paths(tmp_path, "cumulative"), title=TITLE)
    assert_written(tmp_path, "cumulative")


def test_luigi_waluigi_without_positive_components(tmp_path):
    components = make_components(positive=False)
    assert not (components["mean_log10"] > 0).any()
    plots.luigi_waluigi(components, *paths(tmp_path, "waluigi"), top_n=3, title=TITLE)
    assert_written(tmp_path, "waluigi")


def test_attention_pattern_from_json_lists(tmp_path):
    example = make_example(["L1H2ATN"])
    example = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in example.items()}
    plots.attention_pattern(example, *paths(tmp_path, "pattern"))
    assert_written(tmp_path, "pattern")


def test_overwrites_existing_files(tmp_path, components):
    png, pdf = paths(tmp_path, "top")
    png.write_bytes(b"old")
    pdf.write_bytes(b"old")
    plots.top_components(components, png, pdf)
    assert_written(tmp_path, "top")


def test_nested_output_directory_is_created(tmp_path, components):
    out = tmp_path / "results" / "figures"
    plots.layer_head_heatmap(components, out / "h.png", out / "h.pdf")
    assert_written(out, "h")


def test_cumulative_note_explains_a_missing_or_degenerate_n_star():
    from forbidden_facts.plots import cumulative_note

    assert "does not suppress" in cumulative_note({"total_effect_log10": -0.8, "n_star": None})
    degenerate = {
        "total_effect_log10": 3.5,
        "n_star": 32,
        "n_star_degenerate": True,
        "n_star_degenerate_reason": "N* is more than half of the components",
    }
    assert "degenerate" in cumulative_note(degenerate) and "k90" in cumulative_note(degenerate)
    assert cumulative_note({"total_effect_log10": 3.0, "n_star": 35}) == ""


# ---------------------------------------------------------------------------
# Every figure: files written, and the data it draws equals the artifact's.

HEADS = ["L1H2ATN", "L0H3ATN", "L1H0ATN"]
SUMMARY = {"total_effect_log10": 0.8, "n_star": 5, "k90": 4}


def _heads_and_top(components):
    heads = make_heads(components)
    return heads, heads.sort_values("rank")["component"].head(3).tolist()


FIGURES = {
    "overview": lambda c, png, pdf: plots.overview(make_inference(), png, pdf, title=TITLE),
    "top_components": lambda c, png, pdf: plots.top_components(c, png, pdf, top_n=40, title=TITLE),
    "cumulative": lambda c, png, pdf: plots.cumulative(
        make_curve(c), SUMMARY, png, pdf, title=TITLE
    ),
    "independence": lambda c, png, pdf: plots.independence(make_curve(c), png, pdf, title=TITLE),
    "layer_head_heatmap": lambda c, png, pdf: plots.layer_head_heatmap(c, png, pdf, title=TITLE),
    "luigi_waluigi": lambda c, png, pdf: plots.luigi_waluigi(c, png, pdf, top_n=40, title=TITLE),
    "head_statistics": lambda c, png, pdf: plots.head_statistics(
        *_heads_and_top(c), png, pdf, title=TITLE
    ),
    "attention_pattern": lambda c, png, pdf: plots.attention_pattern(
        make_example(HEADS), png, pdf, title=TITLE
    ),
    "attack_vs_control": lambda c, png, pdf: plots.attack_vs_control(
        make_attack(), png, pdf, title=TITLE
    ),
    "attack_tokens": lambda c, png, pdf: plots.attack_tokens(
        make_tokens(HEADS[:2]), png, pdf, top_n=10, title=TITLE
    ),
}


@pytest.fixture(scope="module")
def drawn(components, tmp_path_factory) -> dict:
    """Every figure drawn once from the synthetic artifacts: name -> what it drew."""
    out = tmp_path_factory.mktemp("figures")
    return {name: draw(components, *paths(out, name)) for name, draw in FIGURES.items()} | {
        "_dir": out
    }


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_writes_png_and_pdf_and_reports_what_it_draws(drawn, name):
    assert_written(drawn["_dir"], name)
    figure = drawn[name]
    assert isinstance(figure, plots.Drawn) and figure.title.endswith(TITLE)
    # every panel draws something: bars, lines, points, outlines or an image
    for panel in figure.panels:
        assert panel.bars or panel.lines or panel.points or panel.steps or panel.images, (
            name,
            panel.title,
        )


def _widths(bars: np.ndarray) -> np.ndarray:
    """Bar lengths of a horizontal bar group, top to bottom (y ascending, axis inverted)."""
    return bars[np.argsort(bars[:, 1]), 2]


def test_overview_draws_the_kept_probabilities_and_the_bayes_factors(drawn):
    inference = make_inference()
    figure = drawn["overview"]
    probabilities = figure.panel("answer probability")
    assert probabilities.title == "answer probability (12 of 12 facts kept)"
    assert set(probabilities.steps) == {plots.KIND_LABELS[k] for k in ("c", "nc0", "nc1")}
    bf = figure.panel("effect of forbidding")
    wide = inference.pivot(index="fact_id", columns="kind", values="logodds")
    for pair in ("nc0", "nc1"):
        bars = bf.bars[f"lbf vs {pair} (n = 12)"]
        assert bars[:, 3].sum() == 12  # one count per kept fact
    lbf = np.concatenate([(wide["c"] - wide[p]).to_numpy() / math.log(10) for p in ("nc0", "nc1")])
    mean_line = next(v for k, v in bf.lines.items() if k.startswith("mean "))
    assert mean_line[:, 0] == pytest.approx(lbf.mean())


def test_top_components_draws_the_ranked_means(drawn, components):
    panel = drawn["top_components"].panel()
    (bars,) = panel.bars.values()
    ranked = components.sort_values("rank")
    assert _widths(bars) == pytest.approx(ranked["mean_log10"].to_numpy())
    assert panel.yticklabels == ranked["component"].tolist()


def test_cumulative_draws_the_suppression_curve_total_n_star_and_k90(drawn, components):
    curve = make_curve(components)
    panel = drawn["cumulative"].panel()
    mean = panel.lines["mean over pairs"]
    assert mean[:, 0].tolist() == curve["k"].tolist()
    assert mean[:, 1] == pytest.approx(-curve["mean_log10"].to_numpy())  # up = suppression
    assert panel.lines["total effect = 0.80"][:, 1] == pytest.approx(0.8)
    assert panel.lines["N* = 5"][:, 0] == pytest.approx(5)
    k90 = panel.lines["k90 = 4 (90% of total)"]
    assert k90.tolist() == [[4, pytest.approx(-curve["mean_log10"].iloc[3])]]


def test_independence_draws_joint_against_summed_single_effects(drawn, components):
    curve = make_curve(components)
    lines = drawn["independence"].panel().lines
    joint = lines["top-k patched together"]
    assert joint[:, 1] == pytest.approx(-curve["mean_log10"].to_numpy())
    (singles,) = [v for k, v in lines.items() if k != "top-k patched together" and len(v) > 2]
    assert singles[:, 1] == pytest.approx(-curve["sum_of_singles_log10"].to_numpy())


def test_layer_head_heatmap_draws_each_component_in_its_cell(drawn, components):
    (grid,) = drawn["layer_head_heatmap"].panel().images
    assert grid.shape == (N_LAYERS, N_HEADS + 1)  # the last column holds the MLPs
    for row in components.itertuples():
        if row.type == "head":
            assert grid[row.layer, row.head] == pytest.approx(row.mean_log10)
        elif row.type == "mlp":
            assert grid[row.layer, N_HEADS] == pytest.approx(row.mean_log10)


def test_luigi_waluigi_draws_the_negative_and_positive_components_apart(drawn, components):
    figure = drawn["luigi_waluigi"]
    neg = components[components["mean_log10"] < 0].sort_values("mean_log10")
    pos = components[components["mean_log10"] > 0].sort_values("mean_log10", ascending=False)
    suppressive, promotive = figure.panel("suppressive"), figure.panel("promotive")
    assert _widths(next(iter(suppressive.bars.values()))) == pytest.approx(neg["mean_log10"])
    assert _widths(next(iter(promotive.bars.values()))) == pytest.approx(pos["mean_log10"])
    starred = [t.removesuffix(" *") for t in suppressive.yticklabels if t.endswith(" *")]
    assert starred == neg.loc[neg["role"] != "neutral", "component"].tolist()


def test_head_statistics_draws_top_heads_against_the_rest(drawn, components):
    heads, top = _heads_and_top(components)
    figure = drawn["head_statistics"]
    for title, column in (("OV circuit", "ov_score"), ("attention to", "attn_forbidden_c")):
        panel = figure.panel(title)
        points = list(panel.points.values())
        is_top = heads["component"].isin(top)
        assert sorted(points[0][:, 1]) == pytest.approx(sorted(heads.loc[is_top, column]))
        assert sorted(points[1][:, 1]) == pytest.approx(sorted(heads.loc[~is_top, column]))
        # the black mean bars span 0.6 around each group (the box medians 0.5)
        means = [v[0, 1] for v in panel.lines.values() if v[1, 0] - v[0, 0] == pytest.approx(0.6)]
        expected = [heads.loc[is_top, column].mean(), heads.loc[~is_top, column].mean()]
        assert means == pytest.approx(expected)


def test_attention_pattern_draws_each_heads_attention(drawn):
    example = make_example(HEADS)
    figure = drawn["attention_pattern"]
    for kind in ("c", "nc1"):
        panel = figure.panel(plots.KIND_LABELS[kind])
        (image,) = panel.images
        assert image == pytest.approx(example[f"attn_{kind}"])
        assert panel.yticklabels == HEADS or panel.yticklabels == HEADS[::-1]


def test_attack_vs_control_draws_both_variants_and_their_means(drawn):
    attack = make_attack()
    figure = drawn["attack_vs_control"]
    deltas = figure.panels[0]
    scatter = figure.panels[1]
    for variant in ("attack", "control"):
        rows = attack[attack["variant"] == variant]
        (bars,) = [v for k, v in deltas.bars.items() if k.startswith(f"{variant} (n = 10")]
        assert bars[:, 3].sum() == len(rows)
        mean = f"{variant} mean = {rows['delta_logodds_log10'].mean():+.2f}"
        assert deltas.lines[mean][:, 0] == pytest.approx(rows["delta_logodds_log10"].mean())
        assert scatter.points[variant] == pytest.approx(rows[["p_before", "p_after"]].to_numpy())


def test_attack_tokens_draws_the_most_attended_tokens_with_their_effect(drawn):
    tokens = make_tokens(HEADS[:2])
    figure = drawn["attack_tokens"]
    for component in HEADS[:2]:
        panel = figure.panel(component)
        best = (
            tokens[tokens["component"] == component]
            .groupby("token", sort=False)[["attention", "delta_logodds_log10"]]
            .mean()
            .nlargest(10, "attention")
        )
        (bars,) = panel.bars.values()
        assert _widths(bars) == pytest.approx(best["attention"].to_numpy())
        assert panel.texts == [f"{d:+.2f}" for d in best["delta_logodds_log10"]]
