"""A model folder is data: code shipped in it never runs, whatever the user answers.

Each folder here is a real tiny Llama whose config or tokenizer config points, through
`auto_map`, at a Python file beside it that would leave a marker file if it were ever
imported; every entry point must refuse the folder by name, before loading, even with
"y" waiting on standard input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forbidden_facts.config import ConfigError
from forbidden_facts.model_folder import RemoteCodeRefused, check_no_remote_code
from forbidden_facts.modeling import ModelLoadError, load_model, load_tokenizer
from forbidden_facts.preflight import check_local_models
from tests.families import tiny_family

ROOT = Path(__file__).resolve().parents[1]

EVIL = """\
from pathlib import Path
Path(__file__).with_name("EXECUTED").write_text("code from the model folder ran")
from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel
from transformers import PreTrainedTokenizerFast as EvilTokenizer
"""


def _folder(root: Path, tokenizer, which: str) -> Path:
    path = root / f"remote-{which}"
    tiny_family("llama2", vocab_size=len(tokenizer), seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "evil.py").write_text(EVIL)
    if which == "config":
        cfg = json.loads((path / "config.json").read_text())
        cfg["auto_map"] = {
            "AutoConfig": "evil.EvilConfig",
            "AutoModelForCausalLM": "evil.EvilModel",
        }
        (path / "config.json").write_text(json.dumps(cfg))
    else:
        tok = json.loads((path / "tokenizer_config.json").read_text())
        tok["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
        (path / "tokenizer_config.json").write_text(json.dumps(tok))
    return path


@pytest.fixture(scope="module", params=["config", "tokenizer"])
def remote(request, tmp_path_factory, tokenizer) -> tuple[Path, str]:
    which = request.param
    name = "config.json" if which == "config" else "tokenizer_config.json"
    return _folder(tmp_path_factory.mktemp("models"), tokenizer, which), name


def test_check_names_the_file_and_key(remote):
    path, name = remote
    with pytest.raises(RemoteCodeRefused) as err:
        check_no_remote_code(path)
    text = str(err.value)
    assert name in text and "`auto_map`" in text and "evil.py" in text
    assert "trust_remote_code=False" in text
    assert not (path / "EXECUTED").exists()


def test_loading_the_model_or_its_tokenizer_refuses_the_folder(remote):
    path, name = remote
    with pytest.raises(ModelLoadError, match=name):
        load_model(path)
    with pytest.raises(ModelLoadError, match=name):
        load_tokenizer(path)
    assert not (path / "EXECUTED").exists()


def test_check_model_refuses_even_when_the_user_answers_yes(remote):
    path, name = remote
    proc = subprocess.run(
        [sys.executable, "-m", "forbidden_facts.cli", "check-model", str(path), "--n-facts", "1"],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert name in proc.stderr and "auto_map" in proc.stderr
    assert "Traceback" not in proc.stderr and "[y/N]" not in proc.stdout + proc.stderr
    assert not (path / "EXECUTED").exists()


def test_preflight_refuses_a_local_model_folder_before_any_job(remote, tmp_path):
    path, name = remote
    config = {
        "run": {"models": ["mine"]},
        "models": {"mine": {"source": "local", "path": str(path)}},
    }
    with pytest.raises(ConfigError) as err:
        check_local_models(config, tmp_path)
    assert "models.mine.path" in str(err.value) and name in str(err.value)


def test_a_plain_model_folder_passes(tmp_path, tokenizer):
    tiny_family("llama2", vocab_size=len(tokenizer), seed=1).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    check_no_remote_code(tmp_path)  # raises nothing
    model, _ = load_model(tmp_path)
    assert model.config.model_type == "llama"


def test_every_transformers_load_in_the_package_refuses_remote_code_explicitly():
    """No from_pretrained call in the package relies on transformers' default."""
    import ast

    calls, missing = 0, []
    for file in sorted((ROOT / "forbidden_facts").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
            ):
                continue
            calls += 1
            explicit = any(
                k.arg == "trust_remote_code"
                and isinstance(k.value, ast.Constant)
                and k.value.value is False
                for k in node.keywords
            )
            if not explicit:
                missing.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    assert calls >= 4, "the package loads models, tokenizers and configs"
    assert not missing, missing
