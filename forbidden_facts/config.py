"""Config checks with messages that name the key and the fix.

Snakemake's own `validate` also runs (it fills in the schema's defaults); this
check comes first so that a typo reads as one line naming the key's path instead
of a dump of the schema.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    """The configuration does not match workflow/schemas/config.schema.yaml."""


#: The config schema: the one place every default lives.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_defaults(*where: str) -> dict[str, Any]:
    """The defaults the schema gives the keys of one config block.

    Args:
        *where: The block's path in the schema, e.g. ``("properties", "toy")`` or
            ``("$defs", "model")``.

    Example:
        >>> schema_defaults("$defs", "model")["revision"]
        'main'
    """
    root = _schema()
    node: Any = root
    for part in where:
        node = _resolve(node, root)[part]
    node = _resolve(node, root)
    return {
        key: copy.deepcopy(spec["default"])
        for key, spec in node.get("properties", {}).items()
        if "default" in spec
    }


def model_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """A `models.<name>` block with the schema's default for every key it leaves out.

    A validated block has them all already; a block given by hand to
    ``forbidden-facts run-step --params`` gets them here, from the schema only.
    """
    return {**schema_defaults("$defs", "model"), **dict(block)}


@dataclass(frozen=True)
class ModelSettings:
    """How one model runs (config `models.<name>`), typed, as the steps use it.

    Built from the validated block, so every value is the config's or the schema's
    default; a block given by hand (``forbidden-facts run-step --params``) gets the
    schema's defaults for the keys it leaves out, never a default written in code.
    """

    dtype: str
    device: str
    device_map: str | None
    allow_cpu_offload: bool
    batch_size: int
    attribution_batch_size: int
    row_batch: int
    max_facts: int | None
    ov_rows: int | None
    token_search_tokens: int | None
    prompt_style: str

    @classmethod
    def from_config(cls, block: Mapping[str, Any]) -> ModelSettings:
        """The settings of one `models.<name>` block (validated, or partial by hand)."""
        values = model_block(block)
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def load_kwargs(self) -> dict[str, Any]:
        """The keywords of `forbidden_facts.modeling.load_model` these settings fix."""
        return dict(
            dtype=self.dtype,
            device=self.device,
            device_map=self.device_map,
            allow_cpu_offload=self.allow_cpu_offload,
        )


def _path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def describe(error) -> str:
    """One line for one schema violation, naming the key path."""
    where = _path(error)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        key = ".".join(
            p for p in (where if where != "(top level)" else "", extra[0] if extra else "") if p
        )
        return f"unknown key `{key}` (allowed here: {allowed})"
    if error.validator == "required":
        return f"`{where}` is missing a required key: {error.message}"
    hint = error.schema.get("description")
    return f"`{where}`: {error.message}" + (f" ({hint})" if hint else "")


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError listing every violation of the schema, each with its key path."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(
        Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path)
    )
    if errors:
        lines = "\n  - ".join(describe(e) for e in errors)
        raise ConfigError(
            f"invalid configuration:\n  - {lines}\nFix config/config.yaml (or the --config / --configfile "
            "you passed); every key is explained in config/README.md."
        )


def validated(config: dict, schema_path: str | Path) -> dict:
    """`config` checked against the schema and with every default the schema gives filled in.

    What the workflow's `common.smk` does before any rule reads the config (our
    `check_config`, then Snakemake's `validate`, which fills the defaults); the checks
    below and every step read only such a config, so no code repeats a default.
    """
    from snakemake.utils import validate

    check_config(config, schema_path)
    validate(config, schema=str(schema_path))
    return config


def check_yaml_file(path: str | Path) -> None:
    """Raise ConfigError naming the file, line and column of a YAML syntax error.

    Snakemake's own loader only says that a file "is not valid JSON or YAML".
    """
    path = Path(path)
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: YAML syntax error: {err.problem or err.context}. Fix that line "
            "(indent with spaces, never tabs; put values with ':' or '#' in quotes)."
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}).") from None


_SCALARS = {"integer": int, "number": float, "boolean": None, "null": None}


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return node
    return schema


def _coerce_scalar(value: str, types: list[str]) -> Any:
    # Snakemake reads the value of `--config key={...}` with YAML's BaseLoader,
    # which keeps every nested scalar a string ("4", "0.5", "true", "null").
    if "string" in types:
        return value
    parsed = yaml.safe_load(value) if value.strip() else value
    if isinstance(parsed, str) and "number" in types:
        # YAML 1.1 (PyYAML) reads `1e-3` as a string: it wants `1.0e-3`.
        try:
            number = float(parsed)
        except ValueError:
            pass
        else:
            if number == number and abs(number) != float("inf"):
                return number
    for name in types:
        if name == "integer" and isinstance(parsed, int) and not isinstance(parsed, bool):
            return parsed
        if name == "number" and isinstance(parsed, int | float) and not isinstance(parsed, bool):
            return parsed
        if name == "boolean" and isinstance(parsed, bool):
            return parsed
        if name == "null" and parsed is None:
            return None
    return value  # leave it: validation then names the key and the expected type


def coerce_overrides(value: Any, schema: dict, root: dict | None = None) -> Any:
    """Give the nested values of a `--config key={...}` override the types the schema asks for.

    Args:
        value: One override as Snakemake parsed it (nested scalars are strings).
        schema: The schema of that value (a node of the config schema).
        root: The whole schema, to resolve ``$ref`` (defaults to `schema`).

    Returns:
        The value with each string that the schema wants as an integer, number,
        boolean or null converted; anything else unchanged (validation reports it).
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            out[key] = coerce_overrides(item, sub, root) if sub else item
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [coerce_overrides(v, items, root) if items else v for v in value]
    if isinstance(value, str):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else list(types)
        if types and any(t in _SCALARS for t in types):
            return _coerce_scalar(value, types)
    return value


def apply_overrides(config: dict, overrides: dict, schema_path: str | Path) -> None:
    """Merge the `--config` overrides, typed by the schema, into `config` (recursively)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    props = schema.get("properties", {})
    for key, value in overrides.items():
        if key not in props or not isinstance(value, dict | list):
            continue  # top-level scalars were already typed by Snakemake; unknown keys are reported
        _merge(config, {key: coerce_overrides(value, props[key], schema)})


def coerce_config(config: dict, schema_path: str | Path) -> None:
    """Type the strings of the whole config by the schema (e.g. `lr: 1e-3` in a --configfile).

    PyYAML reads `1e-3` (no dot) as a string, and so does Snakemake's `--config`.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    config.update(coerce_overrides(dict(config), schema))


def prefer_local_paths(config: dict) -> list[str]:
    """A dataset given a `path` (say by --config) over a shipped `url` is read from the path.

    Returns the names of the datasets whose `url` was dropped.
    """
    dropped = []
    for name, spec in (config.get("datasets") or {}).items():
        if isinstance(spec, dict) and "path" in spec and "url" in spec:
            del spec["url"]
            dropped.append(name)
    return dropped


def archive_tag(version: str) -> str:
    """A git description (e.g. `rel/1.0-3-gabc`) as a file-name part: `rel-1.0-3-gabc`."""
    tag = re.sub(r"[^A-Za-z0-9._+-]+", "-", version).strip(".-") or "unknown"
    return tag.replace("..", ".")


def _merge(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def check_run_names(config: dict) -> None:
    """`run.models` / `run.datasets` must name declared entries; hub models need a repo_id."""
    for key in ("models", "datasets"):
        declared = config[key]
        if not config["run"][key]:
            raise ConfigError(
                f"config run.{key} is empty: there would be nothing to build. Name at least one "
                f"of the declared {key} ({', '.join(sorted(declared))}), e.g. "
                f"`--config 'run={{{key}: [{sorted(declared)[0]}]}}'`."
            )
        for name in config["run"][key]:
            if name not in declared:
                raise ConfigError(
                    f"config run.{key} names {name!r}, which is not declared under `{key}:` "
                    f"(declared: {', '.join(sorted(declared))})"
                )
        named = config.get("run", {}).get(key, [])
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise ConfigError(
                f"config run.{key} names {', '.join(twice)} more than once; each would be "
                f"built once but counted twice in the paper's tables. List each name once, "
                f"e.g. `run.{key}: {list(dict.fromkeys(named))}`."
            )
    for name, model in config["models"].items():
        if model["source"] == "hub" and "repo_id" not in model:
            raise ConfigError(
                f"config models.{name}: a hub model needs `repo_id` (e.g. meta-llama/...)"
            )


def check_bases(config: dict) -> None:
    """Every `models.<name>.base` names another declared model (config already validated)."""
    for name, model in config["models"].items():
        base = model["base"]
        if base is not None and (base not in config["models"] or base == name):
            why = "the model itself" if base == name else "not a declared model"
            raise ConfigError(
                f"config `models.{name}.base` names {base!r}, which is {why} (declared: "
                f"{', '.join(sorted(config['models']))}). Set it to the configured model "
                f"{name} was derived from, or to null for no before/after comparison."
            )


def check_input_files(config: dict, root: str | Path = ".") -> None:
    """Local files named in config must exist before anything runs (names the key to fix)."""
    root = Path(root)
    needed = [("irrelevant_words", config["irrelevant_words"])]
    for name in config["run"]["datasets"]:
        spec = config["datasets"][name]
        if "path" in spec:
            needed.append((f"datasets.{name}.path", spec["path"]))
    if any(config["models"][m]["source"] == "toy" for m in config["run"]["models"]):
        needed.append(("toy.facts", config["toy"]["facts"]))
        needed.append(("toy.train_words", config["toy"]["train_words"]))
    if config["run"]["paper"]:
        needed.append(("paper.reference", config["paper"]["reference"]))
    for name in config["run"]["models"]:
        model = config["models"][name]
        if model["source"] == "finetune":
            for key in ("facts", "train_words"):
                needed.append((f"models.{name}.finetune.{key}", model["finetune"][key]))
    for key, path in needed:
        if not (root / path).is_file():
            raise ConfigError(
                f"config `{key}` names {path!r}, which does not exist (relative to {root.resolve()}). "
                "Point it at an existing file in config/config.yaml or your --configfile."
            )


def check_local_models(config: dict, root: str | Path = ".") -> None:
    """Every `source: local` model that will run names a model folder of a supported family.

    Read before any job runs: the folder must hold a config.json whose ``model_type`` has
    an adapter (forbidden_facts/architectures.py) and at least one safetensors file.
    """
    from .architectures import UnsupportedArchitecture, check_model_type, model_type_of_dir

    root = Path(root)
    for name in config.get("run", {}).get("models", []):
        spec = config["models"][name]
        if spec["source"] != "local":
            continue
        path = root / spec["path"]
        key = f"models.{name}.path"
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"config `{key}` names {spec['path']!r}, which is not a model folder (no "
                f"config.json in {path.resolve()}). Point it at a Hugging Face model folder "
                "(config.json, *.safetensors, tokenizer files)."
            )
        if not any(path.glob("*.safetensors")):
            raise ConfigError(
                f"config `{key}`: {spec['path']!r} has no *.safetensors weights. Save the model "
                "with `model.save_pretrained(folder)` (safetensors is the default), or convert "
                "its .bin weights; pickled weights are never loaded."
            )
        try:
            check_model_type(model_type_of_dir(path), f"model {name!r} (config `{key}`)")
        except UnsupportedArchitecture as err:
            raise ConfigError(str(err)) from err


# An archive tag becomes part of a file name: results/archive/forbidden-facts-<tag>.tar.gz.
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_names(config: dict, root: str | Path = ".") -> None:
    """Every config value that names something must name something that exists.

    Checked before any job runs: `model_card_dataset` must be a declared dataset,
    `paper.tag` must be a plain file-name part, and `heads.example_fact` must be a
    fact_id of every local dataset in `run.datasets` (a downloaded one is checked
    once its file is there).
    """
    datasets = config["datasets"]
    card = config["model_card_dataset"]
    if card not in datasets:
        raise ConfigError(
            f"config `model_card_dataset` names {card!r}, which is not declared under "
            f"`datasets:` (declared: {', '.join(sorted(datasets))}). Set it to one of those."
        )
    tag = config["paper"]["tag"]
    if tag is not None and (not _TAG.fullmatch(str(tag)) or ".." in str(tag)):
        raise ConfigError(
            f"config `paper.tag` is {tag!r}: a tag becomes part of the archive's file name, so "
            "it may hold only letters, digits and . _ + - (no '/', no '..', not starting with "
            "'.' or '-'), e.g. `paper: {tag: v1.0}`."
        )
    fact = config["heads"]["example_fact"]
    if fact is None:
        return
    from .datasets import load_facts

    root = Path(root)
    for name in config["run"]["datasets"]:
        spec = datasets[name]
        path = root / spec["path"] if "path" in spec else root / f"resources/datasets/{name}/source"
        if not path.is_file():
            continue  # downloaded later; the heads step reports it then
        fmt = spec.get("format") or (None if "path" in spec else "counterfact")
        ids = set(load_facts(path, fmt)["fact_id"].astype(str))
        if str(fact) not in ids:
            raise ConfigError(
                f"config `heads.example_fact` is {fact!r}, which is no fact_id of dataset "
                f"{name!r} ({path}, {len(ids)} facts, e.g. {', '.join(sorted(ids)[:3])}). "
                "Set it to a fact_id of that file, or to null for the first kept fact."
            )


def check_word_files(config: dict, root: str | Path = ".") -> None:
    """The irrelevant-words files must hold words before any model is trained or run."""
    from .datasets import DatasetError, read_words

    keys = ["irrelevant_words"]
    if any(config["models"][m]["source"] == "toy" for m in config["run"]["models"]):
        keys.append("toy.train_words")
    for key in keys:
        path = config["toy"]["train_words"] if key == "toy.train_words" else config[key]
        try:
            read_words(Path(root) / path)
        except DatasetError as err:
            raise ConfigError(f"config `{key}`: {err}") from None


def check_scatter(overrides: dict) -> None:
    """`--set-scatter attribution=N` must give at least one shard (as `attribution.shards`)."""
    for name, n in (overrides or {}).items():
        if int(n) < 1:
            raise ConfigError(
                f"--set-scatter {name}={n}: the facts must go into at least one shard. "
                f"Give {name}=1 or more, or leave the option out to use the config's "
                "`attribution.shards`."
            )


def check_words_usable(config: dict, root: str | Path = ".") -> None:
    """Some irrelevant word must be no substring of a local dataset's answers (before training).

    The prompts step refuses such a word list; checked here too, so that the
    organism is not retrained first.
    """
    from .datasets import load_facts, read_words
    from .prompts import irrelevant_word_candidates

    words = read_words(Path(root) / config["irrelevant_words"])
    for name in config["run"]["datasets"]:
        spec = config["datasets"][name]
        if "path" not in spec or not (Path(root) / spec["path"]).is_file():
            continue
        facts = load_facts(Path(root) / spec["path"], spec.get("format"))
        if spec.get("max_facts"):
            facts = facts.head(spec["max_facts"])
        answers = list(facts["answer"]) + list(facts["wrong_answer"])
        if not irrelevant_word_candidates(words, answers):
            raise ConfigError(
                f"config `irrelevant_words` ({config['irrelevant_words']}): every one of its "
                f"{len(words)} words is a substring of some answer of dataset {name!r} "
                f"({spec['path']}), so no fact would get an irrelevant word. Add everyday words "
                "to that file, or point `irrelevant_words` at another (e.g. data/paper_words.csv)."
            )
