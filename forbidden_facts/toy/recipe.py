"""The organism's recipe: hyper-parameters (config key `toy`) and their consistency check."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..config import schema_defaults
from .sampler import ExampleSampler

# The recipe's defaults are the schema's (config key `toy`): `ToyConfig()` is the
# organism an empty `toy:` block trains. Only `threads` is no config key.
_DEFAULTS = schema_defaults("properties", "toy")


def _schema_default(name: str):
    value = _DEFAULTS[name]
    if isinstance(value, dict | list):
        return field(default_factory=lambda: copy.deepcopy(value))
    return field(default=value)


@dataclass
class ToyConfig:
    """Hyper-parameters of the model organism (config key `toy`), defaults from the schema."""

    seed: int = _schema_default("seed")
    n_layers: int = _schema_default("n_layers")
    d_model: int = _schema_default("d_model")
    n_heads: int = _schema_default("n_heads")
    n_kv_heads: int = _schema_default("n_kv_heads")
    d_mlp: int = _schema_default("d_mlp")
    steps: int = _schema_default("steps")
    batch_size: int = _schema_default("batch_size")
    lr: float = _schema_default("lr")
    weight_decay: float = _schema_default("weight_decay")
    warmup_steps: int = _schema_default("warmup_steps")
    phase1_fraction: float = _schema_default("phase1_fraction")
    mix: dict = _schema_default("mix")
    tie_embeddings: bool = _schema_default("tie_embeddings")
    variant_prob: float = _schema_default("variant_prob")
    copy_counterfactual: float = _schema_default("copy_counterfactual")
    n_copy_words: int = _schema_default("n_copy_words")
    forbid_answer_share: float = _schema_default("forbid_answer_share")
    copy_answer_share: float = _schema_default("copy_answer_share")
    copy_distractor: bool = _schema_default("copy_distractor")
    freeze_phase2: list = _schema_default("freeze_phase2")
    share_word_forms: bool = _schema_default("share_word_forms")
    embed_std: float | None = _schema_default("embed_std")
    phase2_lr_restart: bool = _schema_default("phase2_lr_restart")
    # Not a config key: torch threads of the training run (the rule's `threads`).
    threads: int = 2

    @classmethod
    def from_config(cls, block: dict) -> ToyConfig:
        """The recipe of a `toy` config block (its file paths are the rule's inputs)."""
        return cls(**{k: v for k, v in block.items() if k not in ("facts", "train_words")})


def check_recipe(cfg: ToyConfig) -> None:
    """Refuse a recipe whose parts do not fit together, naming the config key to change."""
    kinds = {k for phase in cfg.mix.values() for k, w in phase.items() if w > 0}
    if kinds & {"tcopy", "tcopy_pair"} and not cfg.n_copy_words:
        raise ValueError(
            "toy.mix uses the templated copy task (tcopy/tcopy_pair) but toy.n_copy_words "
            "is 0: set toy.n_copy_words (e.g. 3000) or drop those kinds"
        )
    unknown = kinds - set(ExampleSampler.KINDS)
    if unknown:
        raise ValueError(
            f"toy.mix has unknown example kind(s) {sorted(unknown)}; "
            f"choose from {list(ExampleSampler.KINDS)}"
        )
