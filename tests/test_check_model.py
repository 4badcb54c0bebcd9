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


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("models") / "llama"
    tiny_family("llama2", vocab_size=len(tokenizer), seed=4).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _copy_without_weights(src, dest):
    import shutil

    shutil.copytree(src, dest)
    (dest / "model.safetensors").unlink()
    return dest


def test_check_model_bad_inputs_get_one_message_and_no_traceback(saved_llama, tmp_path, capsys):
    # Issue 30, defect 8: each of these ended in a raw traceback.
    cases = {}
    binonly = _copy_without_weights(saved_llama, tmp_path / "binonly")
    (binonly / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle, never opened")
    cases["binonly"] = (
        [str(binonly)],
        "pytorch_model.bin, pickled weights, which are never opened",
    )
    linked = _copy_without_weights(saved_llama, tmp_path / "linked")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not weights at all\n" * 50)
    (linked / "model.safetensors").symlink_to(foreign)
    cases["linked"] = ([str(linked)], f"(a link to {foreign}) is not a safetensors weight file")
    broken = _copy_without_weights(saved_llama, tmp_path / "broken")
    (broken / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    cases["broken"] = ([str(broken)], "does not exist: the link is broken")
    good = str(saved_llama)
    cases["n0"] = ([good, "--n-facts", "0"], "--n-facts is 0: give 1 or more")
    cases["facts"] = ([good, "--facts", str(tmp_path / "nope.csv")], "nope.csv does not exist")
    cases["folder"] = ([good, "--facts", str(tmp_path)], "is a folder, not a file")
    cases["path"] = ([str(tmp_path / "nope")], "nope does not exist")
    for name, (argv, expected) in cases.items():
        assert main(["check-model", *argv]) == 2, name
        err = capsys.readouterr().err
        assert expected in err, (name, err)
        assert "Traceback" not in err and "Delete" not in err, (name, err)


def test_a_local_weight_file_linked_to_a_foreign_file_fails_the_preflight(saved_llama, tmp_path):
    # Issue 30, defect 3: it passed the preflight, then got the advice to delete the folder.
    from forbidden_facts.config import ConfigError
    from forbidden_facts.io import check_readable
    from forbidden_facts.preflight import check_local_models

    linked = _copy_without_weights(saved_llama, tmp_path / "mine")
    (tmp_path / "notes.txt").write_text("x" * 500)
    (linked / "model.safetensors").symlink_to(tmp_path / "notes.txt")
    config = {
        "run": {"models": ["mine"]},
        "models": {"mine": {"source": "local", "path": str(linked)}},
    }
    with pytest.raises(ConfigError) as err:
        check_local_models(config)
    msg = str(err.value)
    assert "config `models.mine.path`" in msg and "is not a safetensors weight file" in msg
    assert "Delete" not in msg and "the workflow never changes this folder" in msg
    # A step that meets such a file advises the same, never deleting the user's folder.
    said = check_readable(linked / "model.safetensors")
    assert "is not a folder the workflow builds" in said and "Delete" not in said
