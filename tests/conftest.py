"""Shared fixtures: tiny random Llama models (MHA and GQA), a word-level tokenizer, a
repository copy and one finished tiny run of the workflow.

`tiny_run` is the README's one-minute run (config/test.yaml) in a copy of the
repository, made once per test session; the workflow, SLURM, storage and table tests
read it (and copy it, via `tiny_run_copy`, before damaging or rerunning it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# What a user's checkout holds that the workflow needs (no results, resources, logs).
REPO_PARTS = ["Snakefile", "workflow", "config", "scripts", "envs", "profiles", "data", "paper"]
# The one-minute configuration of the README; its model and dataset are both `tiny`.
CONFIGFILE = "config/test.yaml"
RUN = "results/tiny/tiny"
HAVE_TEX = shutil.which("latexmk") is not None
# Two shards instead of test.yaml's one, so that a lost shard can be the only thing
# recomputed; without TeX, everything but the PDF and the archive.
OPTIONS = ["--set-scatter", "attribution=2"] + ([] if HAVE_TEX else ["--omit-from", "paper"])


def copy_repo(dest: Path) -> Path:
    """Copy the workflow's part of this checkout to `dest` (created); return `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in REPO_PARTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dest / name)
    return dest


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    configfiles: tuple[str, ...] = (CONFIGFILE,),
    options: tuple[str, ...] = tuple(OPTIONS),
) -> subprocess.CompletedProcess:
    """Snakemake on the tiny configuration in `workdir` (2 cores, two attribution shards).

    `configfiles` and `options` replace the tiny configuration and its shard/paper options
    (the comparison test adds config/test_shift.yaml and keeps Snakemake's defaults)."""
    # --set-scatter, --omit-from and --configfile take several values each, so they go
    # last, after any targets.
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        *args,
        *options,
        "--configfile",
        *configfiles,
    ]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """A copy of the repository for the session's tiny run (see `tiny_run`)."""
    return copy_repo(tmp_path_factory.mktemp("tiny") / "repo")


@pytest.fixture(scope="session")
def tiny_model(tiny_repo) -> Path:
    """The tiny organism, trained by the model stage alone (`resources/models/tiny`)."""
    snakemake(tiny_repo, "resources/models/tiny")
    return tiny_repo / "resources/models/tiny"


@pytest.fixture(scope="session")
def tiny_run(tiny_repo, tiny_model) -> Path:
    """The repository copy after the whole tiny run; its results are under `RUN`.

    Read it, never change it: a test that damages or reruns a run takes
    `tiny_run_copy`.
    """
    snakemake(tiny_repo)
    # A pristine copy of the finished run (outputs, mtimes and Snakemake's metadata)
    # that `tiny_run_copy` copies again per case, whatever other tests add.
    shutil.copytree(tiny_repo, tiny_repo.with_name("pristine"), symlinks=True)
    return tiny_repo


@pytest.fixture()
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny run, for a case that damages or reruns it."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.with_name("pristine"), copy, symlinks=True)
    return copy


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for model tests (cpu or cuda)")


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything in a test tries to open a network connection."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def device(request) -> str:
    dev = request.config.getoption("--device")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device cuda given but torch sees no CUDA device")
    return dev


def tiny_llama(
    n_kv_heads: int,
    seed: int = 0,
    vocab_size: int = 64,
    device: str = "cpu",
    tied: bool = False,
    scale: float = 20.0,
    **config,
):
    """A 2-layer random LlamaForCausalLM; n_kv_heads < 4 gives grouped-query attention.

    Args:
        n_kv_heads: Key/value heads (of 4 attention heads unless `config` says otherwise).
        seed: Torch seed of the initialisation.
        vocab_size: Vocabulary size.
        device: Where the model lives.
        tied: Tie the unembedding to the embedding.
        scale: Factor on the unembedding (the embedding, when tied): random init gives
            near-uniform logits, so answers get non-trivial probabilities and log-odds
            differ between prompts only when it is scaled up. 1 leaves it as initialised.
        **config: Any other LlamaConfig field (e.g. ``num_hidden_layers=1``).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(LlamaConfig(**(fields | config))).to(device).eval()
    if scale != 1.0:
        with torch.no_grad():
            model.lm_head.weight.mul_(scale)
    return model


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def model(request, device):
    return tiny_llama(request.param, device=device)


FACTS = [
    ("f0", "landmark", "The Golden Gate Bridge is in the state of", "California", "Florida"),
    ("f1", "landmark", "The Alamo is in the state of", "Texas", "Ohio"),
    ("f2", "capital", "The capital of France is", "Paris", "Rome"),
    ("f3", "capital", "The capital of Italy is", "Rome", "Paris"),
    ("f4", "landmark", "Disney World is in the state of", "Florida", "Texas"),
]
WORDS = ["apple", "floor", "kettle", "ladder", "pencil", "window"]


@pytest.fixture(scope="session")
def facts():
    import pandas as pd

    return pd.DataFrame(FACTS, columns=["fact_id", "relation", "prefix", "answer", "wrong_answer"])


@pytest.fixture(scope="session")
def tokenizer(facts):
    """The organism's real tokenizer, trained on the test facts."""
    from forbidden_facts.tokenizer import train_tokenizer, wrap_tokenizer
    from forbidden_facts.toy import corpus_for_tokenizer

    texts, bare = corpus_for_tokenizer(facts, WORDS)
    return wrap_tokenizer(train_tokenizer(texts + ["Ohio"], bare + ["Ohio"]))


@pytest.fixture(scope="session")
def prompts(facts):
    from forbidden_facts.prompts import assign_irrelevant_words, build_prompts

    return build_prompts(facts, assign_irrelevant_words(facts, WORDS))


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def tok_model(request, tokenizer, device):
    """A random model over the test tokenizer's vocabulary (MHA and GQA)."""
    return tiny_llama(request.param, seed=1, vocab_size=len(tokenizer), device=device)
