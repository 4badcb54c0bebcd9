"""Real snakemake runs on a tiny configuration in a temporary directory.

These check the artifacts a user gets (columns, provenance, consistency between
files), that a finished run has nothing left to do, that a lost shard is the only
thing recomputed, and that config mistakes fail before any job runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CONFIGFILE, HAVE_TEX, OPTIONS, RUN, snakemake

# The run itself is the session's `tiny_run` (tests/conftest.py), shared with the SLURM,
# storage and table tests.


@pytest.fixture(scope="session")
def workdir(tiny_repo) -> Path:
    return tiny_repo


@pytest.fixture(scope="session")
def model_dir(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="session")
def finished(tiny_run) -> Path:
    return tiny_run / RUN


@pytest.fixture()
def run_copy(tiny_run_copy) -> Path:
    return tiny_run_copy


def test_model_stage_output_loads_offline_with_transformers(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # grouped-query attention
    assert list(model_dir.glob("*.safetensors")) and not list(model_dir.glob("*.bin"))
    assert tok("The capital of France is")["input_ids"][0] == tok.bos_token_id
    assert model.config.vocab_size == len(tok)


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

    facts = load_facts(workdir / "data/facts/tiny.csv")
    paper_words = read_words(workdir / "data/paper_words.csv")
    expected = dict(zip(facts.fact_id, assign_irrelevant_words(facts, paper_words), strict=True))
    nc1 = pd.read_parquet(finished / "prompts.parquet").query("kind == 'nc1'")
    assert {f: expected[f] for f in nc1.fact_id} == dict(
        zip(nc1.fact_id, nc1.forbidden_word, strict=True)
    )
    record = json.loads((model_dir / "toy_training.json").read_text())
    assert set(record["held_out_words"]) == set(paper_words)
    assert record["train_words"] and not set(record["train_words"]) & set(paper_words)


def test_finetune_path_analyses_only_never_taught_facts(workdir, finished):
    """config/test.yaml's tiny-obedient: a few steps of the fine-tune of the tiny organism."""
    from forbidden_facts.datasets import load_facts, read_words

    snakemake(workdir, "results/tiny-obedient/model_card.json")
    model = workdir / "resources/models/tiny-obedient"
    assert list(model.glob("*.safetensors")) and (model / "tokenizer.json").exists()
    record = json.loads((model / "finetune_record.json").read_text())
    assert record["base_model"] == "tiny" and len(record["loss_curve"]) == record["config"]["steps"]
    assert not set(record["train_words"]) & set(read_words(workdir / "data/paper_words.csv"))
    run = workdir / "results/tiny-obedient/tiny"
    prompts = pd.read_parquet(run / "prompts.parquet")
    taught = {w.lower() for w in record["target_answers"] + record["forbidden_targets"]}
    assert not prompts["answer"].str.lower().isin(taught).any()
    assert not prompts["fact_id"].isin(record["trained_fact_ids"]).any()
    summary = json.loads((run / "prompts_summary.json").read_text())
    n_facts = len(load_facts(workdir / "data/facts/tiny.csv"))
    assert summary["n_excluded_trained"] == n_facts - summary["n_facts_in"] > 0
    assert sum(summary["excluded_by_reason"].values()) == summary["n_excluded_trained"]
    card = json.loads((workdir / "results/tiny-obedient/model_card.json").read_text())
    assert card["finetune"]["n_excluded_trained"] == summary["n_excluded_trained"]
    assert card["finetune"]["total_effect_never_taught_log10"] == card["total_effect_log10"]
    # The default run's organism is untouched by its fine-tune.
    assert json.loads((finished / "prompts_summary.json").read_text())["n_excluded_trained"] == 0


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
        "n_star_frac",
        "n_star_degenerate",
    ):
        assert key in summary
    # Intervals over facts; N* read against the curve it came from.
    assert summary["ci_unit"] == "fact" and (comps.n_facts == summary["n_kept"]).all()
    assert comps.set_index("component").loc["EMBED", "role"] == "neutral"
    suppression = -curve.mean_log10.to_numpy()
    total = summary["total_effect_log10"]
    if summary["n_star"] is not None:
        assert suppression[summary["n_star"] - 1] > total
        assert (suppression[: summary["n_star"] - 1] <= total).all()
        assert summary["n_star_frac"] == summary["n_star"] / n_comp
    overshoot = suppression.max() - total
    assert summary["n_star_degenerate"] == (
        total <= 0
        or summary["n_star"] is None
        or overshoot < 0.05 * total
        or summary["n_star"] > n_comp / 2
    )
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
    for fig in (
        "overview",
        "cumulative",
        "top_components",
        "head_statistics",
        "attack_vs_control",
        "circuit_curves",
        "attack_prediction",
    ):
        assert (finished / f"figures/{fig}.png").stat().st_size > 0
        assert (finished / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
    effects = pd.read_parquet(finished / "total_effects.parquet")
    assert list(effects.columns) == ["fact_id", "pair", "component", "direct_log10", "total_log10"]
    comps = pd.read_parquet(finished / "components.parquet")
    top = list(comps.sort_values("rank")["component"][: effects["component"].nunique()])
    assert list(dict.fromkeys(effects["component"])) == top
    assert set(effects["pair"]) == {"nc0", "nc1"} and effects.notna().all().all()
    faith = json.loads((finished / "faithfulness.json").read_text())
    for key in (
        "recomputed_share_at_n_star",
        "complement_share_at_n_star",
        "k90_recomputed",
        "spearman_direct_total",
        "differing_components",
        "attack_spearman",
        "attack_auc",
    ):
        assert key in faith
    # Every component patched with recomputation reproduces the c prompt.
    assert faith["all_components_error_log10"] < 1e-5
    card = json.loads((workdir / "results/tiny/model_card.json").read_text())
    assert card["n_kv_heads"] < card["n_heads"] and card["train_seconds"] > 0
    assert 0 < card["frac_known"] <= 1


def test_report_has_every_figure_and_table_with_its_caption(finished, workdir):
    """`snakemake --report report.zip` on the finished run, read as a user would."""
    import zipfile

    snakemake(workdir, "--report", "report.zip")
    with zipfile.ZipFile(workdir / "report.zip") as z:
        html = z.read("report/report.html").decode()
        raw = {Path(n).name: z.read(n) for n in z.namelist() if n.startswith("report/data/raw/")}
    figures = sorted(finished.glob("figures/*.png"))
    paper = workdir / "results/paper"
    tables = sorted(paper.glob("tables/*.tex")) + [paper / "values.tex"]
    pdf = [paper / "main.pdf"] if HAVE_TEX else []
    # One table per template (findings.tex is text, not a table) plus values.tex.
    n_tables = len(
        [t for t in (workdir / "paper/templates").glob("*.tex.j2") if t.stem != "findings.tex"]
    )
    assert len(figures) == 12 and len(tables) == n_tables + 1
    for path in figures + tables + pdf:
        # The file itself, as the run wrote it ...
        assert raw[path.name] == path.read_bytes(), path.name
        # ... and its entry, whose caption starts like its caption file.
        entry = html.split(f'"{path.relative_to(workdir)}": {{', 1)[1]
        caption = json.loads(re.search(r'"caption": ("(?:[^"\\]|\\.)*")', entry)[1])
        rst = {".tex": "tables", ".pdf": "paper"}.get(path.suffix, path.stem)
        first_words = " ".join((workdir / f"workflow/report/{rst}.rst").read_text().split()[:3])
        assert caption.removeprefix("<p>").startswith(first_words), (path.name, caption[:80])


def test_finished_run_has_nothing_to_do_and_an_interrupted_run_resumes(run_copy):
    workdir, finished = run_copy, run_copy / RUN
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout
    # As if the run had died while shard 1 was running: shard 2 and everything that
    # does not depend on the attribution were done, the rest never written.
    keep = (
        "prompts",
        "inference",
        "attack_self_insertion",
        "attack_summary",
        "overview",
        "shard-2-of-2",
    )
    for path in finished.rglob("*.*"):
        if not any(k in path.name for k in keep):
            path.unlink()
    (workdir / "results/tiny/model_card.json").unlink()
    # Outputs flagged update() are listed with " (update)": _planned strips it.
    outputs = _planned(snakemake(workdir, "-n"))
    assert any(o.endswith("shard-1-of-2.parquet") for o in outputs)
    assert not any(o.endswith("shard-2-of-2.parquet") for o in outputs)
    assert not any("resources/models" in o or o.endswith("inference.parquet") for o in outputs)


def test_unknown_config_key_fails_before_any_job(workdir):
    proc = snakemake(workdir, "-n", "--config", "no_such_key=1", check=False)
    assert proc.returncode != 0
    assert "no_such_key" in proc.stdout + proc.stderr
    assert not (workdir / "results/no_such_key").exists()


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".snakemake_timestamp"
    }


def _planned(proc: subprocess.CompletedProcess) -> list[str]:
    """Every output a dry run plans (a job's `output:` line lists them, comma-separated)."""
    outputs = []
    for line in proc.stdout.splitlines():
        if line.strip().startswith("output:"):
            names = line.split("output:", 1)[1].split(",")
            outputs += [name.strip().removesuffix(" (update)") for name in names]
    return outputs


def test_settings_that_do_not_make_the_model_never_rebuild_it(run_copy):
    # Issue 13, item 1: a batch size or a device is no reason to download or train a
    # model again (and risk losing it). Issue 21, defect 3: nor to rerun any analysis,
    # since no result depends on them.
    plan = snakemake(
        run_copy,
        "-n",
        "--config",
        "models={tiny: {batch_size: 7, attribution_batch_size: 3, row_batch: 64, device: auto}}",
        "heads={vocab_chunk: 100}",
        "attack={batch_size: 5}",
    )
    # Only the archive, whose provenance.json records the config in effect, is packed again.
    outputs = _planned(plan)
    assert all(o.startswith("results/archive/") for o in outputs), outputs
    # What does change a result still reruns it, and only what depends on it.
    outputs = _planned(snakemake(run_copy, "-n", "--config", "heads={ov_rows: 50}"))
    assert any(o.endswith("heads.parquet") for o in outputs), outputs
    assert not any(o.endswith(("inference.parquet", "attribution.parquet")) for o in outputs)


def test_a_failed_model_rebuild_keeps_the_model_and_its_siblings(run_copy):
    models = run_copy / "resources/models"
    (models / "other").mkdir()
    (models / "other/weights.txt").write_text("a sibling's files")
    before = _digests(models)
    proc = snakemake(
        run_copy,
        "resources/models/tiny",
        "--config",
        "toy={n_heads: 6, n_kv_heads: 4, steps: 1, warmup_steps: 0}",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "train_toy_model failed:" in out and "full traceback in" in out
    assert "Traceback" in (run_copy / "logs/train_toy_model/tiny.log").read_text()
    assert _digests(models) == before  # the old model, byte for byte, and the sibling
    assert not [p.name for p in models.iterdir() if p.name.startswith(".")]


def test_a_truncated_shard_is_named_and_the_merged_table_is_kept(run_copy):
    # Issue 13, item 2.
    base = run_copy / RUN
    shard = base / "attribution/shard-1-of-2.parquet"
    merged = (base / "attribution.parquet").read_bytes()
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    proc = snakemake(run_copy, f"{RUN}/attribution.parquet", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "shard-1-of-2.parquet is truncated or corrupt" in out and "Delete it" in out
    assert (base / "attribution.parquet").read_bytes() == merged


def test_a_truncated_model_file_is_named_with_its_fix(run_copy):
    # Issue 13, item 7: a step run by hand on a model whose weights were cut short.
    from forbidden_facts.cli import main as cli_main

    weights = run_copy / "resources/models/tiny/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    log = run_copy / "inference.log"
    args = [
        "run-step",
        "inference",
        "--input",
        f"model={run_copy / 'resources/models/tiny'}",
        "--input",
        f"prompts={run_copy / RUN / 'prompts.parquet'}",
        "--output",
        f"table={run_copy / 'i.parquet'}",
        "--output",
        f"summary={run_copy / 'i.json'}",
        "--params",
        '{"model": {"dtype": "float32", "device": "cpu", "batch_size": 8}}',
        "--wildcard",
        "model=tiny",
        "--wildcard",
        "dataset=tiny",
        "--log",
        str(log),
    ]
    with pytest.raises(SystemExit) as stop:
        cli_main(args)
    assert stop.value.code == 1
    text = log.read_text()
    assert f"{weights} is truncated or corrupt" in text and "Delete the folder" in text
    assert "Traceback" in text
    assert not (run_copy / "i.parquet").exists()


def test_config_mistakes_and_nested_overrides_before_any_job(run_copy):
    # Issue 13, items 3-5, on the real command line.
    plan = snakemake(
        run_copy,
        "-n",
        "--config",
        "attribution={shards: 4}",
        'toy={"seed": 0, "variant_prob": 0.5}',
    )
    assert "resources/models/tiny" in _planned(plan)  # a new recipe: the organism is retrained
    proc = snakemake(run_copy, "-n", "--config", "heads={example_fact: nope}", check=False)
    assert proc.returncode != 0 and "heads.example_fact" in proc.stdout + proc.stderr
    config = run_copy / "config/config.yaml"
    config.write_text(config.read_text().replace("toy:\n  seed: 0", "toy:\n  seed: 0\n   x: 1"))
    proc = snakemake(run_copy, "-n", check=False)
    assert proc.returncode != 0
    assert "config.yaml, line" in proc.stdout + proc.stderr


# Issue 21: nothing a user built is lost to a failed or killed job, and going back to
# the good config after a failed attempt reruns nothing.


def _results(run: Path) -> dict[str, str]:
    return {**_digests(run / "results"), **_digests(run / "resources/models")}


def _nothing_to_do(run: Path) -> None:
    plan = snakemake(run, "-n")
    assert "Nothing to be done" in plan.stdout, _planned(plan)


def test_a_failed_rerun_keeps_every_output_and_going_back_reruns_nothing(run_copy):
    before = _results(run_copy)
    # A device this machine lacks (defect 1): the forced inference fails.
    proc = snakemake(
        run_copy,
        "--forcerun",
        "inference",
        "--config",
        "models={tiny: {device: cuda:7}}",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "inference failed:" in out, out[-3000:]
    assert "Traceback" not in out  # the traceback is in the log only (defect 6)
    assert "Traceback" in (run_copy / "logs/inference/tiny/tiny.log").read_text()
    assert _results(run_copy) == before
    _nothing_to_do(run_copy)
    # A toy recipe that fails (defect 2): the model is kept, and going back plans nothing.
    proc = snakemake(
        run_copy,
        "--config",
        "toy={n_heads: 6, n_kv_heads: 4, steps: 1, warmup_steps: 0}",
        check=False,
    )
    assert proc.returncode != 0 and "train_toy_model failed:" in proc.stdout + proc.stderr
    assert _results(run_copy) == before
    _nothing_to_do(run_copy)


def _start(run: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, *OPTIONS]
    cmd += ["--configfile", CONFIGFILE]
    return subprocess.Popen(
        cmd,
        cwd=run,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # A backgrounded pytest ignores SIGINT, and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize(
    "sig, presses", [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGINT, 2)]
)
def test_a_stopped_rerun_keeps_heads_and_leaves_no_lock(run_copy, sig, presses):
    # Defect 1: SIGTERM to the process group during `heads`; defect 6: two Ctrl-C.
    before = _results(run_copy)
    log = run_copy / "logs/heads/tiny/tiny.log"
    log.unlink()
    proc = _start(run_copy, "--forcerun", "heads")
    deadline = time.time() + 600
    # The step creates its log first thing; loading the model takes it seconds more.
    while not log.exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(1)
    for _ in range(presses):
        os.killpg(proc.pid, sig)
        time.sleep(0.5)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0, out[-3000:]
    assert "heads stopped by" in log.read_text(), out[-3000:]
    assert "Cannot close a running event loop" not in out
    assert _results(run_copy) == before
    assert not list((run_copy / ".snakemake/locks").glob("*")), "a stale lock"
    _nothing_to_do(run_copy)


def test_config_mistakes_are_refused_before_any_job_and_cost_nothing(run_copy):
    # Defects 1, 2 and 7: refused before anything is planned, so nothing is touched.
    before = _results(run_copy)
    (run_copy / "data/empty_words.txt").write_text("\n")
    cases = {
        "more than once": ["--config", "run={models: [tiny, tiny]}"],
        "holds no words": ["--config", "irrelevant_words=data/empty_words.txt"],
        "paper.reference": ["--config", "paper={reference: config/no_such.yaml}"],
    }
    for expected, args in cases.items():
        proc = snakemake(run_copy, *args, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and expected in out, (args, out[-2000:])
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", CONFIGFILE]
    proc = subprocess.run(
        [*cmd, "--set-scatter", "attribution=0"], cwd=run_copy, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "at least one shard" in proc.stdout + proc.stderr
    assert _results(run_copy) == before
    _nothing_to_do(run_copy)


def test_a_missing_tokenizer_and_prompts_longer_than_the_context_are_named(run_copy):
    # Defect 8: the missing file is named (not "install sentencepiece"), nothing is lost;
    # a prompt longer than max_position_embeddings drops its fact, counted in the summary.
    model = run_copy / "resources/models/tiny"
    summary = run_copy / RUN / "prompts_summary.json"
    before = _results(run_copy)
    tokenizer = (model / "tokenizer.json").read_bytes()
    (model / "tokenizer.json").unlink()
    target = f"{RUN}/prompts_summary.json"
    proc = snakemake(run_copy, target, "--forcerun", "prompts", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "has no tokenizer.json" in out, out[-2000:]
    (model / "tokenizer.json").write_bytes(tokenizer)
    assert _results(run_copy) == before
    n_facts = json.loads(summary.read_text())["n_facts"]
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    snakemake(run_copy, target, "--forcerun", "prompts")
    record = json.loads(summary.read_text())
    assert record["dropped_by_reason"]["longer_than_context"] == n_facts
    assert record["n_facts"] == 0 and "max_position_embeddings" in record["warnings"][-1]


def test_a_paper_word_the_finetune_never_uses_does_not_retrain_it(run_copy):
    # Issue 30, defect 5: a word added to data/paper_words.csv retrained the fine-tune
    # (its whole file was an input). Its params now hold the words that decide it. Its
    # base here is a local copy of the organism (issue 30, defect 3: a local model can
    # be a base); the organism itself retrains on a new paper word by design, its
    # vocabulary holds every word it is evaluated on.
    import shutil

    shutil.copytree(run_copy / "resources/models/tiny", run_copy / "mine/tiny")
    recipe = {"facts": "data/facts/tiny.csv", "train": "all", "layers": None, "steps": 3}
    cfg = run_copy / "local_base.json"
    cfg.write_text(
        json.dumps(
            {
                "models": {
                    "tl": {"source": "local", "path": "mine/tiny", "device": "cpu"},
                    "tl-obedient": {
                        "source": "finetune",
                        "base": "tl",
                        "device": "cpu",
                        "finetune": {**recipe, "batch_size": 8, "lr": 0.001},
                    },
                },
            }
        )
    )
    configs = (CONFIGFILE, cfg.name)
    target = "resources/models/tl-obedient"
    snakemake(run_copy, target, configfiles=configs)
    words = run_copy / "data/paper_words.csv"
    words.write_text(words.read_text() + "Zqxjv\n")
    plan = snakemake(run_copy, "-n", target, configfiles=configs).stdout
    assert "Nothing to be done" in plan, plan[-3000:]
    # A word it trains on does retrain it (the prompts step would refuse the model).
    trained = json.loads((run_copy / target / "finetune_record.json").read_text())
    words.write_text(words.read_text() + f"{trained['train_words'][0]}\n")
    plan = snakemake(run_copy, "-n", target, configfiles=configs).stdout
    assert "rule finetune_model:" in plan and "Params have changed" in plan, plan[-3000:]


def test_a_new_shard_count_reruns_nothing_while_the_table_is_up_to_date(run_copy):
    # Issue 30, defect 5: `--set-scatter attribution=3` (or back to 1) planned 33 jobs,
    # heads and token search included, for a table equal but for float noise. The
    # count splits the work like a batch size; it applies when attribution runs again.
    options = [o for o in OPTIONS if not o.startswith(("--set-scatter", "attribution="))]
    for count in ("3", "1"):
        plan = snakemake(
            run_copy, "-n", options=("--set-scatter", f"attribution={count}", *options)
        )
        assert "Nothing to be done" in plan.stdout, plan.stdout[-3000:]
    # Without the merged table, the configured count is what runs.
    (run_copy / RUN / "attribution.parquet").unlink()
    plan = snakemake(run_copy, "-n", options=("--set-scatter", "attribution=3", *options))
    planned = _planned(plan)
    assert sorted(p for p in planned if "/attribution/shard-" in p) == [
        f"{RUN}/attribution/shard-{i}-of-3.parquet" for i in (1, 2, 3)
    ], planned
