"""Config mistakes are caught before any job runs, with the key's path in the message."""

from pathlib import Path

import pytest
import yaml

from forbidden_facts.config import ConfigError, check_config, check_input_files, check_run_names

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name):
    check_config(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA)


def test_unknown_key_is_named_with_its_path(config):
    config["toy"]["stepz"] = 3
    config["no_such_key"] = 1
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
    assert "`toy.stepz`" in str(err.value) and "`no_such_key`" in str(err.value)
    assert "config/README.md" in str(err.value)


def test_wrong_type_and_missing_required_key(config):
    config["models"]["toy"]["dtype"] = "float8"
    del config["models"]["llama2-7b-chat"]["source"]
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
    msg = str(err.value)
    assert "models.toy.dtype" in msg and "float8" in msg
    assert "models.llama2-7b-chat" in msg and "source" in msg


def test_run_must_name_declared_models(config):
    config["run"] = {"models": ["llama3"], "datasets": ["curated"]}
    with pytest.raises(ConfigError, match="llama3"):
        check_run_names(config)


def test_missing_local_file_names_the_key(config, tmp_path):
    config["run"] = {"models": ["toy"], "datasets": ["curated"]}
    with pytest.raises(ConfigError, match="irrelevant_words"):
        check_input_files(config, root=tmp_path)
    check_input_files(config, root=ROOT)
