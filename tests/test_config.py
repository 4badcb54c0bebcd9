"""Config mistakes are caught before any job runs, with the key's path in the message."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from forbidden_facts.config import ConfigError, check_config, check_input_files, check_run_names

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
CONFIG = ROOT / "config/config.yaml"


@pytest.fixture
def config():
    """config.yaml as the workflow reads it: validated, the schema's defaults filled in."""
    from forbidden_facts.config import validated

    return validated(yaml.safe_load((ROOT / "config/config.yaml").read_text()), SCHEMA)


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


def _override(config: dict, *entries: str) -> dict:
    """Apply `--config` entries the way snakemake does (its own parser), then type them."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    from forbidden_facts.config import apply_overrides

    overrides = parse_config(list(entries))
    update_config(config, overrides)
    apply_overrides(config, overrides, SCHEMA)
    return config


def test_nested_config_overrides_are_typed_by_the_schema(config):
    # The forms config/README.md and docs/organism.md document.
    _override(config, 'toy={"seed": 1, "variant_prob": 0.5}', "attribution={shards: 4}")
    _override(config, "heads={ov_rows: null, example_fact: '12'}", "run={paper: false}")
    check_config(config, SCHEMA)
    assert config["toy"]["seed"] == 1 and config["toy"]["variant_prob"] == 0.5
    assert config["attribution"]["shards"] == 4
    assert config["heads"]["ov_rows"] is None
    assert config["heads"]["example_fact"] == "12"  # a string key stays a string
    # merged: run.models is config.yaml's own list, untouched by the override of run.paper
    assert config["run"]["paper"] is False
    assert config["run"]["models"] == yaml.safe_load(CONFIG.read_text())["run"]["models"]
    _override(config, "attribution={shards: four}")
    with pytest.raises(ConfigError, match="attribution.shards"):
        check_config(config, SCHEMA)


def test_empty_run_lists_are_refused_with_the_fix(config):
    config["run"] = {"models": [], "datasets": []}
    with pytest.raises(ConfigError, match=r"run\.models is empty.*toy"):
        check_run_names(config)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    from forbidden_facts.config import check_yaml_file

    bad = tmp_path / "config.yaml"
    bad.write_text("run:\n  models: [toy]\ntoy:\n  seed: 0\n   steps: 10\n")
    with pytest.raises(ConfigError, match=r"config\.yaml, line 5, column \d+: YAML syntax error"):
        check_yaml_file(bad)
    check_yaml_file(ROOT / "config/config.yaml")


def test_names_are_checked_before_any_job(config, tmp_path):
    from forbidden_facts.config import check_names

    check_names(config, ROOT)
    for key, value, expected in [
        ("model_card_dataset", "nope", "model_card_dataset"),
        ("paper", {"tag": "../../x"}, "paper.tag"),
        ("paper", {"tag": "a/b"}, "paper.tag"),
        ("heads", {"example_fact": "no-such-fact"}, "heads.example_fact"),
    ]:
        bad = {**config, key: value}
        with pytest.raises(ConfigError, match=expected):
            check_names(bad, ROOT)
    first = pd.read_csv(ROOT / "data/facts/curated.csv", dtype=str)["fact_id"].iloc[0]
    check_names({**config, "heads": {"example_fact": first}, "paper": {"tag": "v1.0"}}, ROOT)


def test_a_finetune_model_must_name_another_declared_model_as_base(config):
    config["models"]["obedient-x"] = {"source": "finetune", "base": "gpt-5", "finetune": {}}
    with pytest.raises(ConfigError, match=r"models\.obedient-x\.base.*gpt-5"):
        check_run_names(config)
    config["models"]["obedient-x"]["base"] = "obedient-x"
    with pytest.raises(ConfigError, match="not another declared model"):
        check_run_names(config)
