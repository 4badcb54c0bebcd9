"""The fine-tune's recipe (config key ``models.<name>.finetune``) and its checks."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..config import schema_defaults

FINETUNE_RECORD = "finetune_record.json"
TRAIN_PARTS = ("attention", "attention_all", "all")
KINDS = ("c", "nc0", "nc1", "tcopy_c", "tcopy_nc")
# The copy task's fact prefix: the pseudo-word, then a cue whose completion is the word.
COPY_PREFIX = "Repeat the word {w}. The word is"


class RecipeError(ValueError):
    """A fine-tuning recipe that cannot be run as asked, with what to change."""


# The recipe's defaults are the schema's (`$defs.finetune`): `FinetuneConfig()` is the
# fine-tune an empty `finetune:` block trains; its prompt style is the model's.
_DEFAULTS = schema_defaults("$defs", "finetune")


def _schema_default(block: dict, name: str):
    value = block[name]
    if isinstance(value, dict | list):
        return field(default_factory=lambda: copy.deepcopy(value))
    return field(default=value)


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe (config key ``models.<name>.finetune``), defaults from the schema."""

    seed: int = _schema_default(_DEFAULTS, "seed")
    train: str = _schema_default(_DEFAULTS, "train")
    layers: list[int] | None = _schema_default(_DEFAULTS, "layers")
    steps: int = _schema_default(_DEFAULTS, "steps")
    batch_size: int = _schema_default(_DEFAULTS, "batch_size")
    lr: float = _schema_default(_DEFAULTS, "lr")
    weight_decay: float = _schema_default(_DEFAULTS, "weight_decay")
    train_answer_share: float = _schema_default(_DEFAULTS, "train_answer_share")
    mix: dict[str, float] = _schema_default(_DEFAULTS, "mix")
    n_copy_words: int = _schema_default(_DEFAULTS, "n_copy_words")
    # The base model's prompt style (config models.<name>.prompt_style).
    prompt_style: str = _schema_default(schema_defaults("$defs", "model"), "prompt_style")


def check_recipe(cfg: FinetuneConfig, n_layers: int | None = None) -> None:
    """Raise RecipeError for a recipe that names unknown parts, kinds or layers."""
    key = "models.<name>.finetune"
    if cfg.train not in TRAIN_PARTS:
        raise RecipeError(
            f"{key}.train is {cfg.train!r}; use one of {list(TRAIN_PARTS)} in config/config.yaml."
        )
    unknown = set(cfg.mix) - set(KINDS)
    if unknown or not any(v > 0 for v in cfg.mix.values()):
        raise RecipeError(
            f"{key}.mix must give positive weight to some of {list(KINDS)} "
            f"(unknown: {sorted(unknown)}); fix it in config/config.yaml."
        )
    if {"tcopy_c", "tcopy_nc"} & {k for k, v in cfg.mix.items() if v > 0} and cfg.n_copy_words < 2:
        raise RecipeError(
            f"{key}.mix uses the copy task (tcopy_c/tcopy_nc) but {key}.n_copy_words is "
            f"{cfg.n_copy_words}; set it to the number of pseudo-words (e.g. 3000)."
        )
    if cfg.train == "attention":
        if cfg.layers is None or len(cfg.layers) != 2 or cfg.layers[0] > cfg.layers[1]:
            raise RecipeError(
                f"{key}.train is `attention`, which needs `layers: [first, last]` (inclusive, "
                f"0-based; e.g. [15, 29]); got {cfg.layers!r}. Or use `train: attention_all`."
            )
        if n_layers is not None and not 0 <= cfg.layers[0] <= cfg.layers[1] < n_layers:
            raise RecipeError(
                f"{key}.layers {cfg.layers} is outside the base model's layers 0..{n_layers - 1}."
            )
