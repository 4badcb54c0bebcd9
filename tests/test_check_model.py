"""`forbidden-facts check-model`: passes on a correct adapter, fails on a wrong one."""

from __future__ import annotations

import pytest

from forbidden_facts import architectures
from forbidden_facts.cli import main
from tests.families import tiny_family


@pytest.fixture(scope="module")
def saved_gemma2(tmp_path_factory, tokenizer):
    """A tiny Gemma-2 (sandwich norms, soft-cap: the family easiest to get wrong) on disk."""
    path = tmp_path_factory.mktemp("models") / "gemma2"
    tiny_family("gemma2", vocab_size=len(tokenizer), seed=4).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_check_model_passes_on_a_supported_model(saved_gemma2, capsys):
    assert main(["check-model", str(saved_gemma2), "--n-facts", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("components_sum", "logits_rebuilt", "patch_all", "single_deltas"):
        line = next(ln for ln in out.splitlines() if name in ln)
        assert line.startswith("ok") and "tolerance" in line and "error" in line


def test_check_model_fails_when_the_adapter_is_wrong(saved_gemma2, capsys, monkeypatch):
    # Gemma's adapter on a Gemma-2 model ignores the post-attention and post-MLP norms.
    monkeypatch.setitem(architectures.ADAPTERS, "gemma2", architectures.GemmaAdapter)
    assert main(["check-model", str(saved_gemma2), "--n-facts", "2"]) == 1
    captured = capsys.readouterr()
    assert any(ln.startswith("FAIL") and "components_sum" in ln for ln in captured.out.splitlines())
    assert "forbidden_facts/architectures.py" in captured.err


def test_check_model_refuses_an_unsupported_model_type(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16)).save_pretrained(
        tmp_path
    )
    assert main(["check-model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'gpt2'" in err and "gemma2" in err and "forbidden_facts/architectures.py" in err
