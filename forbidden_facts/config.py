"""Config checks with messages that name the key and the fix.

Snakemake's own `validate` also runs (it fills in the schema's defaults); this
check comes first so that a typo reads as one line naming the key's path instead
of a dump of the schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator


class ConfigError(ValueError):
    """The configuration does not match workflow/schemas/config.schema.yaml."""


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
        if not config.get("run", {}).get(key, [None]):
            raise ConfigError(
                f"config run.{key} is empty: there would be nothing to build. Name at least one "
                f"of the declared {key} ({', '.join(sorted(declared))}), e.g. "
                f"`--config 'run={{{key}: [{sorted(declared)[0]}]}}'`."
            )
        for name in config.get("run", {}).get(key, []):
            if name not in declared:
                raise ConfigError(
                    f"config run.{key} names {name!r}, which is not declared under `{key}:` "
                    f"(declared: {', '.join(sorted(declared))})"
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
    needed = [("irrelevant_words", config.get("irrelevant_words", "data/paper_words.csv"))]
    for name in config.get("run", {}).get("datasets", []):
        spec = config["datasets"][name]
        if "path" in spec:
            needed.append((f"datasets.{name}.path", spec["path"]))
    if any(config["models"][m]["source"] == "toy" for m in config.get("run", {}).get("models", [])):
        toy = config.get("toy", {})
        needed.append(("toy.facts", toy.get("facts", "data/facts/curated.csv")))
        needed.append(("toy.train_words", toy.get("train_words", "data/irrelevant_words.txt")))
    for key, path in needed:
        if not (root / path).is_file():
            raise ConfigError(
                f"config `{key}` names {path!r}, which does not exist (relative to {root.resolve()}). "
                "Point it at an existing file in config/config.yaml or your --configfile."
            )


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
    card = config.get("model_card_dataset", "curated")
    if card not in datasets:
        raise ConfigError(
            f"config `model_card_dataset` names {card!r}, which is not declared under "
            f"`datasets:` (declared: {', '.join(sorted(datasets))}). Set it to one of those."
        )
    tag = (config.get("paper") or {}).get("tag")
    if tag is not None and (not _TAG.fullmatch(str(tag)) or ".." in str(tag)):
        raise ConfigError(
            f"config `paper.tag` is {tag!r}: a tag becomes part of the archive's file name, so "
            "it may hold only letters, digits and . _ + - (no '/', no '..', not starting with "
            "'.' or '-'), e.g. `paper: {tag: v1.0}`."
        )
    fact = (config.get("heads") or {}).get("example_fact")
    if fact is None:
        return
    from .datasets import load_facts

    root = Path(root)
    for name in config.get("run", {}).get("datasets", []):
        spec = datasets[name]
        path = (
            root / spec["path"]
            if "path" in spec
            else root / f"resources/datasets/{name}/source.json"
        )
        if not path.is_file():
            continue  # downloaded later; the heads step reports it then
        ids = set(load_facts(path)["fact_id"].astype(str))
        if str(fact) not in ids:
            raise ConfigError(
                f"config `heads.example_fact` is {fact!r}, which is no fact_id of dataset "
                f"{name!r} ({path}, {len(ids)} facts, e.g. {', '.join(sorted(ids)[:3])}). "
                "Set it to a fact_id of that file, or to null for the first kept fact."
            )
