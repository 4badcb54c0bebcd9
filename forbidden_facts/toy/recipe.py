"""The organism's recipe: hyper-parameters (config key `toy`) and their consistency check."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sampler import ExampleSampler


@dataclass
class ToyConfig:
    """Hyper-parameters of the model organism (config key `toy`)."""

    seed: int = 0
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 8
    n_kv_heads: int = 4
    d_mlp: int = 256
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    phase1_fraction: float = 0.4
    mix: dict = field(
        default_factory=lambda: {
            "phase1": {"nc": 0.7, "copy": 0.3},
            "phase2": {"pair": 0.7, "nc": 0.15, "copy": 0.15},
        }
    )
    tie_embeddings: bool = False
    variant_prob: float = 0.0
    copy_counterfactual: float = 0.0
    n_copy_words: int = 0
    forbid_answer_share: float = 1.0
    copy_answer_share: float = 0.0
    copy_distractor: bool = False
    freeze_phase2: list = field(default_factory=list)
    share_word_forms: bool = False
    embed_std: float | None = None
    phase2_lr_restart: bool = False
    threads: int = 2


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
