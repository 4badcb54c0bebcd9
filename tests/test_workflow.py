"""Real snakemake runs on a tiny configuration in a temporary directory.

These check the artifacts a user gets (columns, provenance, consistency between
files), that a finished run has nothing left to do, that a lost shard is the only
thing recomputed, and that config mistakes fail before any job runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "workflow", "config", "scripts", "envs", "profiles", "data", "paper"]

TINY = {
    "run": {"models": ["toy"], "datasets": ["curated"], "paper": False},
    "datasets": {"curated": {"path": "tiny_facts.csv"}},
    "toy": {
        "seed": 0,
        "facts": "tiny_facts.csv",
        "n_layers": 2,
        "d_model": 32,
        "n_heads": 4,
        "n_kv_heads": 2,
        "d_mlp": 64,
        "steps": 250,
        "batch_size": 32,
        "lr": 0.01,
        "warmup_steps": 20,
    },
    "attribution": {"shards": 2},
    "identification": {"k_min": 5, "n_bootstrap": 20},
    "heads": {"top_k": 3},
    "attack": {"top_k_heads": 1, "n_facts": 2, "batch_size": 512},
}

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # --configfile takes several values, so it goes last, after any targets.
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", "tiny.yaml"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("workflow")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, work / name)
    facts = pd.read_csv(ROOT / "data/facts/curated.csv", dtype=str)
    # Two relations, few facts: enough for the organism to learn some of them in seconds.
    tiny = (
        facts[facts.relation.isin(["country_capital", "athlete_sport"])].groupby("relation").head(8)
    )
    tiny.to_csv(work / "tiny_facts.csv", index=False)
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return work


@pytest.fixture(scope="module")
def model_dir(workdir) -> Path:
    snakemake(workdir, "resources/models/toy")
    return workdir / "resources/models/toy"


def test_model_stage_output_loads_offline_with_transformers(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # grouped-query attention
    assert list(model_dir.glob("*.safetensors")) and not list(model_dir.glob("*.bin"))
    assert tok("The capital of France is")["input_ids"][0] == tok.bos_token_id
    assert model.config.vocab_size == len(tok)


@pytest.fixture(scope="module")
def finished(workdir, model_dir) -> Path:
    snakemake(workdir)
    return workdir / "results/toy/curated"


def test_prompts_and_inference_artifacts(finished):
    prompts = pd.read_parquet(finished / "prompts.parquet")
    assert list(prompts.columns[:2]) == ["fact_id", "kind"]
    assert {"prefix", "answer", "forbidden_word", "prompt"} <= set(prompts.columns)
    assert all(
        sorted(kinds) == ["c", "nc0", "nc1"]
        for kinds in prompts.groupby("fact_id").kind.apply(list)
    )
    inference = pd.read_parquet(finished / "inference.parquet")
    wide = inference.pivot(index="fact_id", columns="kind", values="p_correct")
    kept = inference.drop_duplicates("fact_id").set_index("fact_id").kept
    assert (kept == (wide[["nc0", "nc1"]].min(axis=1) > 0.5).reindex(kept.index)).all()
    summary = json.loads((finished / "inference_summary.json").read_text())
    assert summary["n_kept"] == int(kept.sum()) > 0
    assert summary["provenance"]["dataset_sha256"]
    # 16 facts: both summaries warn that statistics over so few facts mean little
    assert any("mean little" in w for w in summary["warnings"])
    prompts_summary = json.loads((finished / "prompts_summary.json").read_text())
    assert any("mean little" in w for w in prompts_summary["warnings"])


def test_nc1_words_are_the_papers_and_held_out_of_training(workdir, finished, model_dir):
    from forbidden_facts.datasets import load_facts, read_words
    from forbidden_facts.prompts import assign_irrelevant_words

    facts = load_facts(workdir / "tiny_facts.csv")
    paper_words = read_words(workdir / "data/paper_words.csv")
    expected = dict(zip(facts.fact_id, assign_irrelevant_words(facts, paper_words), strict=True))
    nc1 = pd.read_parquet(finished / "prompts.parquet").query("kind == 'nc1'")
    assert {f: expected[f] for f in nc1.fact_id} == dict(
        zip(nc1.fact_id, nc1.forbidden_word, strict=True)
    )
    record = json.loads((model_dir / "toy_training.json").read_text())
    assert set(record["held_out_words"]) == set(paper_words)
    assert record["train_words"] and not set(record["train_words"]) & set(paper_words)


def test_attribution_identification_and_provenance(finished):
    import pyarrow.parquet as pq

    attribution = pd.read_parquet(finished / "attribution.parquet")
    summary = json.loads((finished / "summary.json").read_text())
    n_comp = 1 + 2 * 4 + 2
    assert len(attribution) == summary["n_kept"] * 2 * 2 * n_comp
    comps = pd.read_parquet(finished / "components.parquet")
    assert comps.mean_log10.is_monotonic_increasing and list(comps["rank"]) == list(range(n_comp))
    curve = pd.read_parquet(finished / "cumulative.parquet")
    assert list(curve.component) == list(comps.component[: len(curve)])
    for key in (
        "n_star",
        "n_star_heads",
        "n_star_mlps",
        "n_star_ci",
        "top_component",
        "k90",
        "n_promotive_significant",
        "promotive_sum_log10",
        "total_effect_log10",
    ):
        assert key in summary
    meta = pq.read_schema(finished / "components.parquet").metadata
    prov = json.loads(meta[b"forbidden_facts.provenance"])
    assert (
        prov["model_id"].startswith("toy-organism")
        and prov["dataset_sha256"]
        and prov["code_version"]
    )


def test_heads_attacks_figures_and_card(finished, workdir):
    heads = pd.read_parquet(finished / "heads.parquet")
    assert len(heads) == 2 * 4
    assert {
        "ov_score",
        "attn_forbidden_c",
        "attn_forbidden_nc0",
        "attn_forbidden_nc1",
        "rank",
    } <= set(heads.columns)
    attack = json.loads((finished / "attack_summary.json").read_text())
    for key in (
        "n_facts",
        "frac_top1_flipped",
        "mean_delta_logodds_log10",
        "control_frac_top1_flipped",
        "control_mean_delta_logodds_log10",
        "example",
    ):
        assert key in attack
    tokens = pd.read_parquet(finished / "attack_tokens.parquet")
    assert list(tokens.columns[:6]) == [
        "component",
        "fact_id",
        "token",
        "token_id",
        "attention",
        "delta_logodds_log10",
    ]
    for fig in ("overview", "cumulative", "top_components", "head_statistics", "attack_vs_control"):
        assert (finished / f"figures/{fig}.png").stat().st_size > 0
        assert (finished / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
    card = json.loads((workdir / "results/toy/model_card.json").read_text())
    assert card["n_kv_heads"] < card["n_heads"] and card["train_seconds"] > 0
    assert 0 < card["frac_known"] <= 1


def test_finished_run_has_nothing_to_do_and_an_interrupted_run_resumes(finished, workdir):
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout
    # As if the run had died while shard 0 was running: shard 1 and everything that
    # does not depend on the attribution were done, the rest never written.
    keep = (
        "prompts",
        "inference",
        "attack_self_insertion",
        "attack_summary",
        "overview",
        "shard-1-of-2",
    )
    for path in finished.rglob("*.*"):
        if not any(k in path.name for k in keep):
            path.unlink()
    (workdir / "results/toy/model_card.json").unlink()
    plan = snakemake(workdir, "-n").stdout
    outputs = [line.split("output:")[1].strip() for line in plan.splitlines() if "output:" in line]
    assert any(o.endswith("shard-0-of-2.parquet") for o in outputs)
    assert not any(o.endswith("shard-1-of-2.parquet") for o in outputs)
    assert not any("resources/models" in o or o.endswith("inference.parquet") for o in outputs)


def test_unknown_config_key_fails_before_any_job(workdir):
    proc = snakemake(workdir, "-n", "--config", "no_such_key=1", check=False)
    assert proc.returncode != 0
    assert "no_such_key" in proc.stdout + proc.stderr
    assert not (workdir / "results/no_such_key").exists()
