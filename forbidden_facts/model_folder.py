"""What a model folder may ask of us before anything in it is loaded.

A model folder is data: every load passes ``trust_remote_code=False``. `check_no_remote_code`
refuses a folder whose JSON files ask transformers to import Python code shipped with it,
naming the file and the key, before any weights are read (at load, at preflight, after a
download, in the model card and in check-model); `model_type_of_dir` reads the family a
folder declares.
"""

from __future__ import annotations

from pathlib import Path

from .architectures import ADAPTERS, UnsupportedArchitecture


class RemoteCodeRefused(UnsupportedArchitecture):
    """A model folder that asks transformers to import Python code shipped with it."""


# Keys of a model folder's JSON files through which transformers imports code that came
# with the model (`trust_remote_code`): `auto_map` in config.json, tokenizer_config.json
# or a processor's config, and `custom_pipelines` in config.json.
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")


def check_no_remote_code(path: str | Path, where: str = "the model folder") -> None:
    """Refuse a model folder that asks for custom code, before anything in it is loaded.

    A model folder is data: every load passes ``trust_remote_code=False``, so transformers
    would refuse such a folder anyway, or ask ``[y/N]`` inside a job. This names the file
    and key instead, before any weights are read.

    Raises:
        RemoteCodeRefused: naming the first JSON file and key that points at code.
    """
    import json

    path = Path(path)
    for file in sorted(path.glob("*.json")):
        try:
            data = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # not a config transformers reads as one; the loaders name bad ones
        if not isinstance(data, dict):
            continue
        for key in REMOTE_CODE_KEYS:
            if data.get(key):
                code = sorted(p.name for p in path.glob("*.py"))
                shipped = f" (the folder ships {', '.join(code)})" if code else ""
                raise RemoteCodeRefused(
                    f"{where}: {file} has the key `{key}` ({json.dumps(data[key])[:160]}), "
                    f"which asks transformers to import Python code that came with the "
                    f"model{shipped}. forbidden-facts never runs code from a model folder "
                    "(trust_remote_code=False on every load). Use a model whose family "
                    "transformers implements itself (config.json's `model_type`, one of "
                    f"{', '.join(sorted(ADAPTERS))}); if it is one of those, delete `{key}` "
                    f"from {file.name} and the .py files beside it."
                )


def model_type_of_dir(path: str | Path) -> str | None:
    """The ``model_type`` in a model folder's config.json (None when absent)."""
    import json

    cfg = Path(path) / "config.json"
    return json.loads(cfg.read_text()).get("model_type")
