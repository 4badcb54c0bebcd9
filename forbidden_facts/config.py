"""Config checks with messages that name the key and the fix.

Snakemake's own `validate` also runs (it fills in the schema's defaults); this
check comes first so that a typo reads as one line naming the key's path instead
of a dump of the schema.
"""

from __future__ import annotations

from pathlib import Path

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


def check_run_names(config: dict) -> None:
    """`run.models` / `run.datasets` must name declared entries; hub models need a repo_id."""
    for key in ("models", "datasets"):
        declared = config[key]
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
