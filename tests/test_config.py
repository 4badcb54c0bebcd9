"""Config mistakes are caught before any job runs, with the key's path in the message."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from forbidden_facts.config import ConfigError, check_config
from forbidden_facts.preflight import check_input_files, check_run_names

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
    config["run"].update(models=["toy"], datasets=["curated"])
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
    from forbidden_facts.preflight import check_names

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


def test_defaults_live_in_the_schema_only(config):
    from dataclasses import asdict

    from forbidden_facts.config import ModelSettings, schema_defaults
    from forbidden_facts.toy import ToyConfig

    # ToyConfig() is the organism an empty `toy:` block trains ...
    recipe = {k: v for k, v in schema_defaults("properties", "toy").items()}
    recipe.pop("facts"), recipe.pop("train_words")
    assert {k: v for k, v in asdict(ToyConfig()).items() if k != "threads"} == recipe
    # ... and the config's block gives the organism config.yaml trains.
    toy = ToyConfig.from_config(config["toy"])
    assert toy.d_mlp == 128 and toy.mix == config["toy"]["mix"] and toy.tie_embeddings
    # A model's settings: the config's values, the schema's defaults for a partial block.
    settings = ModelSettings.from_config(config["models"]["toy"])
    assert settings.dtype == config["models"]["toy"]["dtype"]
    assert (
        ModelSettings.from_config({"source": "hub"}).batch_size
        == (schema_defaults("$defs", "model")["batch_size"])
    )


def test_example_fact_is_checked_in_the_datasets_format_and_once_downloaded(config, tmp_path):
    # Issue 21, defect 4: a paper_hq file is read as paper_hq; a downloaded source is checked.
    import shutil

    from forbidden_facts.datasets import load_facts
    from forbidden_facts.preflight import check_names

    sample = ROOT / "tests/fixtures/paper_hq_sample.csv"
    shutil.copy(sample, tmp_path / "hq.csv")
    fact = load_facts(sample, "paper_hq")["fact_id"].iloc[0]
    local = {"hq": {"path": "hq.csv", "format": "paper_hq"}}
    run = {**config["run"], "datasets": ["hq"]}
    check_names(
        {
            **config,
            "datasets": local,
            "run": run,
            "model_card_dataset": "hq",
            "heads": {"example_fact": fact},
        },
        tmp_path,
    )
    source = tmp_path / "resources/datasets/paper_hq/source"
    source.parent.mkdir(parents=True)
    shutil.copy(sample, source)
    run = {**config["run"], "datasets": ["paper_hq"]}
    check_names({**config, "run": run, "heads": {"example_fact": fact}}, tmp_path)
    with pytest.raises(ConfigError, match="heads.example_fact"):
        check_names({**config, "run": run, "heads": {"example_fact": "nope"}}, tmp_path)


def test_gaps_of_issue_21_are_closed(config, tmp_path):
    from forbidden_facts.config import archive_tag, coerce_config, prefer_local_paths
    from forbidden_facts.preflight import check_scatter, check_word_files, check_words_usable

    # 1e-3 (a string to PyYAML) is a number where the schema wants one.
    config["toy"]["lr"] = "1e-3"
    coerce_config(config, SCHEMA)
    assert config["toy"]["lr"] == 0.001
    check_config(config, SCHEMA)
    # A local path wins over a shipped url.
    config["datasets"]["counterfact"]["path"] = "local.json"
    assert prefer_local_paths(config) == ["counterfact"]
    assert "url" not in config["datasets"]["counterfact"]
    check_config(config, SCHEMA)
    # A git tag with '/' makes a plain file name.
    assert archive_tag("rel/1.0-3-gabc") == "rel-1.0-3-gabc"
    # The same model twice, no shard, a word file without words.
    with pytest.raises(ConfigError, match="more than once"):
        check_run_names({**config, "run": {**config["run"], "models": ["toy", "toy"]}})
    with pytest.raises(ConfigError, match="at least one shard"):
        check_scatter({"attribution": 0})
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="holds no words"):
        check_word_files({**config, "irrelevant_words": str(tmp_path / "empty.txt")}, ROOT)
    # Words that are all substrings of answers are refused before the organism trains.
    facts = pd.read_csv(ROOT / "data/facts/tiny.csv", dtype=str)
    (tmp_path / "sub.txt").write_text(facts["answer"].iloc[0][:2].lower() + "\n")
    tiny = {
        **config,
        "irrelevant_words": str(tmp_path / "sub.txt"),
        "datasets": {"tiny": {"path": "data/facts/tiny.csv"}},
        "run": {**config["run"], "datasets": ["tiny"]},
    }
    with pytest.raises(ConfigError, match="substring"):
        check_words_usable(tiny, ROOT)
    # A missing paper.reference is named.
    with pytest.raises(ConfigError, match="paper.reference"):
        check_input_files(
            {
                **config,
                "run": {**config["run"], "paper": True},
                "paper": {"reference": "nope.yaml"},
            },
            ROOT,
        )


def test_a_finetune_model_must_name_another_declared_model_as_base(config):
    from forbidden_facts.preflight import check_bases

    config["models"]["obedient-x"] = {"source": "finetune", "base": "gpt-5", "finetune": {}}
    with pytest.raises(ConfigError, match=r"models\.obedient-x\.base.*gpt-5"):
        check_bases(config)
    config["models"]["obedient-x"]["base"] = "obedient-x"
    with pytest.raises(ConfigError, match="the model itself"):
        check_bases(config)


# The JSON Schema keywords the schema uses; anything else in a schema node is a typo
# (an unquoted description with a comma in a YAML flow mapping becomes a stray key,
# which JSON Schema ignores, and cuts the description short).
SCHEMA_KEYWORDS = {
    "$schema", "$defs", "$ref", "description", "type", "additionalProperties", "required",
    "properties", "default", "enum", "items", "minItems", "maxItems", "minimum", "maximum",
    "exclusiveMinimum", "minProperties", "propertyNames", "allOf", "oneOf", "if", "then", "const",
    "pattern", "minLength", "uniqueItems", "not",
}  # fmt: skip


def test_every_schema_node_holds_only_schema_keywords_and_whole_descriptions():
    def stray(node, path):
        if isinstance(node, list):
            for i, item in enumerate(node):
                yield from stray(item, f"{path}/{i}")
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            where = f"{path}/{key}"
            if path.endswith(("/properties", "/$defs")):
                yield from stray(value, where)  # names of keys, not keywords
            elif key in ("default", "const", "enum"):
                continue  # values, not schema
            else:
                if key not in SCHEMA_KEYWORDS:
                    yield where
                yield from stray(value, where)

    schema = yaml.safe_load(SCHEMA.read_text())
    assert list(stray(schema, "")) == []


def test_config_gaps_of_issue_30_are_closed(config, tmp_path):
    from forbidden_facts.config import check_source_keys
    from forbidden_facts.preflight import check_bases, check_scatter

    # `null` with --config is None where a key takes a string or null, never the text "null".
    _override(
        config,
        "paper={tag: null}",
        "heads={example_fact: null}",
        "models={smollm2-135m-obedient: {base: null, device_map: null}}",
    )
    check_config(config, SCHEMA)
    assert config["paper"]["tag"] is None and config["heads"]["example_fact"] is None
    block = config["models"]["smollm2-135m-obedient"]
    assert block["base"] is None and block["device_map"] is None
    _override(config, "paper={tag: v1}")  # other text stays text
    with pytest.raises(
        ConfigError, match="smollm2-135m-obedient.base` is null, but a `source: fine"
    ):
        check_bases(config)  # which a fine-tune cannot do without
    assert config["paper"]["tag"] == "v1"

    # A folder where a file is expected is called a folder, for each such key.
    import copy

    config["run"].update(models=["smollm2-135m-obedient"], datasets=["tiny"], paper=True)
    config["datasets"]["tiny"] = {"path": "data/facts/tiny.csv"}
    for key in ("irrelevant_words", "datasets.tiny.path", "paper.reference",
                "models.smollm2-135m-obedient.finetune.facts"):  # fmt: skip
        bad = copy.deepcopy(config)
        *parents, last = key.replace("models.smollm2-135m-obedient", "M").split(".")
        node = bad
        for part in parents:
            node = bad["models"]["smollm2-135m-obedient"] if part == "M" else node[part]
        node[last] = "data"  # the repository's data/ folder
        with pytest.raises(ConfigError) as err:
            check_input_files(bad, ROOT)
        assert f"`{key}` names 'data', which is a folder, not a file" in str(err.value)

    # Keys of another source are refused by name, not ignored.
    raw = yaml.safe_load(CONFIG.read_text())
    raw["models"]["smollm2-135m-instruct"]["finetune"] = {"steps": 3}
    raw["models"]["smollm2-135m-instruct"]["path"] = "/models/x"
    with pytest.raises(ConfigError) as err:
        check_source_keys(raw)
    msg = str(err.value)
    assert (
        "`models.smollm2-135m-instruct` is a `source: wheel` model but has `finetune`, `path`"
        in msg
    )
    assert "`source: finetune / local` models take" in msg and "Remove them" in msg

    # A model block without `source` is asked for `source`, and for nothing else.
    raw = yaml.safe_load(CONFIG.read_text())
    raw["models"]["mine"] = {"dtype": "float32"}
    with pytest.raises(ConfigError) as err:
        check_config(raw, SCHEMA)
    lines = [line for line in str(err.value).splitlines() if "models.mine" in line]
    assert lines == ["  - `models.mine` is missing a required key: 'source' is a required property"]

    # A sha256 of 64 decimal digits, unquoted, is read by YAML as a number: say "quote it".
    raw = yaml.safe_load(CONFIG.read_text().replace(
        "sha256: bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "sha256: " + "1" * 64,
    ))  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check_config(raw, SCHEMA)
    assert "`models.smollm2-135m-instruct.sha256` was read as the number" in str(err.value)
    assert "write the value in quotes" in str(err.value)

    # A misspelt --set-scatter name is refused, naming the scatter there is.
    with pytest.raises(ConfigError, match=r"no scatter named 'atribution' \(it has attribution\)"):
        check_scatter({"atribution": 3})
    check_scatter({"attribution": 3})


def test_the_schema_offers_every_prompt_style_the_code_builds():
    from forbidden_facts.prompts import PROMPT_STYLES

    schema = yaml.safe_load(SCHEMA.read_text())
    model = schema["$defs"]["model"]["properties"]
    assert model["prompt_style"]["enum"] == list(PROMPT_STYLES)
