"""Glue of workflow/rules/card.smk: the model card, written after every analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..provenance import stamp

__all__ = ["model_card"]


def model_card(job) -> None:
    """The model's card: its architecture, recall and total effect on `model_card_dataset`.

    For the organism also its training and, measured on the card's dataset, the effect
    on answers it never saw forbidden and its mechanism (`effects.mechanism`): so the
    card is built after every analysis (rule model_card, workflow/rules/card.smk).
    """
    from safetensors import safe_open
    from transformers import AutoConfig

    from ..artifacts import Card as C
    from ..artifacts import Inference
    from ..inference import never_forbidden_effect
    from ..toy import read_training_record

    cfg = AutoConfig.from_pretrained(job.input.model)
    inference = io.read_json(job.input.inference)
    n_params = 0
    for f in sorted(Path(job.input.model).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():
                n_params += int(np.prod(st.get_slice(key).get_shape()))
    n_facts, n_kept = inference[Inference.n_facts], inference[Inference.n_kept]
    card = {
        C.model: job.wildcards.model,
        C.n_params: n_params,
        C.n_layers: cfg.num_hidden_layers,
        C.n_heads: cfg.num_attention_heads,
        C.n_kv_heads: getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        C.d_model: cfg.hidden_size,
        C.vocab_size: cfg.vocab_size,
        C.dataset: inference[Inference.dataset],
        C.frac_known: n_kept / n_facts if n_facts else None,
        C.n_facts: n_facts,
        C.n_kept: n_kept,
        C.total_effect: inference[Inference.total_effect],
    }
    record = read_training_record(job.input.model)
    if record is not None:
        card[C.train_seconds] = record["train_seconds"]
        card[C.seed] = record["config"]["seed"]
        card[C.n_train_words] = len(record["train_words"])
        card[C.n_held_out_words] = len(record["held_out_words"])
        table = io.read_parquet(job.input.inference_table)
        card.update(never_forbidden_effect(table, io.read_parquet(job.input.prompts), record))
    if len(job.input.mechanism):
        from ..effects import mechanism

        summary, components, heads, attack = job.input.mechanism
        card[C.mechanism] = mechanism(
            io.read_json(summary),
            io.read_parquet(components),
            io.read_parquet(heads),
            io.read_json(attack),
            top_k=job.params.top_k,
        )
    io.write_json(job.output[0], card, provenance=stamp(job.wildcards.model, job.input.model))
