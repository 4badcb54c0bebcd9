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
