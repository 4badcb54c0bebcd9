"""`source: local`: a model folder on disk runs through the workflow, read and never written.

The folder is a tiny random Gemma-2 (a family other than the organism's Llama) saved
by the test outside the working directory; a GPT-2 folder (no adapter) is refused
before any job runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import copy_repo
from tests.families import tiny_family

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("local-workflow"))


def _config(work: Path, name: str, path: Path) -> Path:
    cfg = work / f"{name}.json"
    cfg.write_text(
        json.dumps(
            {
                "run": {"models": [name], "datasets": ["tiny"], "paper": False},
                "models": {
                    name: {
                        "source": "local",
                        "path": str(path),
                        "dtype": "float32",
                        "device": "cpu",
                    }
                },
            }
        )
    )
    return cfg


def _snakemake(work: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", *args]
    cmd += ["--configfile", "config/test.yaml", str(cfg)]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900)


def test_a_local_model_folder_runs_and_is_left_untouched(workdir, tmp_path_factory):
    from forbidden_facts.datasets import load_facts
    from forbidden_facts.tokenizer import train_tokenizer, wrap_tokenizer
    from forbidden_facts.toy import corpus_for_tokenizer

    facts = load_facts(ROOT / "data/facts/tiny.csv")
    texts, bare = corpus_for_tokenizer(facts, ["floor", "kettle", "ladder"])
    tokenizer = wrap_tokenizer(train_tokenizer(texts, bare))
    folder = tmp_path_factory.mktemp("models") / "my-gemma2"
    tiny_family("gemma2", vocab_size=len(tokenizer), seed=5).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    before = _snapshot(folder)

    cfg = _config(workdir, "mine", folder)
    target = "results/mine/tiny/inference_summary.json"
    proc = _snakemake(workdir, cfg, target)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _snapshot(folder) == before  # read, never moved or rewritten
    assert not (workdir / "resources/models/mine").exists()

    summary = json.loads((workdir / target).read_text())
    prov = summary["provenance"]
    weights = folder / "model.safetensors"
    assert prov["model_manifest"] == {
        "model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()
    }
    assert prov["model_id"] == str(folder.resolve())
    assert prov["model_revision"].startswith("sha256:")
    table = pd.read_parquet(workdir / "results/mine/tiny/inference.parquet")
    assert table["p_correct"].between(0, 1).all() and len(table) > 0


def test_an_unsupported_local_architecture_fails_before_any_job(workdir, tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("models") / "my-gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16)).save_pretrained(
        folder
    )
    cfg = _config(workdir, "gpt", folder)
    proc = _snakemake(workdir, cfg, "-n")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "'gpt2'" in text and "gemma2" in text and "forbidden_facts/architectures.py" in text
    assert "models.gpt.path" in text
    assert not (workdir / "results/gpt").exists()


def test_weights_replaced_in_place_rerun_and_a_local_model_can_be_a_base(workdir, tmp_path_factory):
    # Issue 30, defect 3: `cp` of other weights over model.safetensors planned nothing
    # (the folder's own time does not change), and a local model could not be a `base:`.
    import shutil

    from forbidden_facts.datasets import load_facts
    from forbidden_facts.tokenizer import train_tokenizer, wrap_tokenizer
    from forbidden_facts.toy import corpus_for_tokenizer

    facts = load_facts(ROOT / "data/facts/tiny.csv")
    texts, bare = corpus_for_tokenizer(facts, ["floor", "kettle", "ladder"])
    tokenizer = wrap_tokenizer(train_tokenizer(texts, bare))
    models = tmp_path_factory.mktemp("models")
    folder, other = models / "mine", models / "other"
    for path, seed in ((folder, 5), (other, 6)):
        tiny_family("gemma2", vocab_size=len(tokenizer), seed=seed).save_pretrained(path)
        tokenizer.save_pretrained(path)
    cfg = _config(workdir, "swap", folder)
    target = "results/swap/tiny/inference_summary.json"
    assert _snakemake(workdir, cfg, target).returncode == 0
    assert "Nothing to be done" in _snakemake(workdir, cfg, "-n", target).stdout

    weights = folder / "model.safetensors"
    shutil.copyfile(other / "model.safetensors", weights)  # same shapes, other values
    new = hashlib.sha256(weights.read_bytes()).hexdigest()
    plan = _snakemake(workdir, cfg, "-n", target).stdout
    for rule in ("local_model_weights", "prompts", "inference"):
        assert f"rule {rule}:" in plan, plan[-3000:]
    proc = _snakemake(workdir, cfg, target)
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((workdir / "resources/local_models/swap/weights.json").read_text())
    assert record["weights"]["model.safetensors"]["sha256"] == new
    prov = json.loads((workdir / target).read_text())["provenance"]
    assert prov["model_manifest"] == {"model.safetensors": new}

    # A fine-tune of the local model, and its comparison with it, plan from its own folder.
    spec = json.loads(cfg.read_text())
    spec["models"]["swap-obedient"] = {
        "source": "finetune",
        "base": "swap",
        "device": "cpu",
        "finetune": {"facts": "data/facts/tiny.csv", "train": "all", "layers": None, "steps": 2},
    }
    spec["run"]["models"] = ["swap-obedient"]
    cfg.write_text(json.dumps(spec))
    proc = _snakemake(workdir, cfg, "-n", "results/swap-obedient/tiny/component_shift.parquet")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for rule in ("finetune_model", "base_inference", "component_shift"):
        assert f"rule {rule}:" in proc.stdout
    assert "MissingInputException" not in proc.stdout + proc.stderr
    assert f"input: {folder}" in proc.stdout or str(folder) in proc.stdout
