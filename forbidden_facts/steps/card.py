"""Glue of workflow/rules/card.smk: the model card, written after every analysis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..provenance import stamp

__all__ = ["model_card"]


def finetune_card(record: dict, prompts_summary: dict | None) -> dict:
    """The fine-tune's figures for the model card (its record and the prompts' exclusion)."""
    card = {
        "finetune": {
            "base_model": record["base_model"],
            "recipe": record["config"],
            # The recipe's choice among the attempts, and their figures.
            "recipe_choice": "docs/obedient.md, Decision rule",
            "seed": record["seed"],
            "train_seconds": record["train_seconds"],
            "seconds_per_step": record["seconds_per_step"],
            "n_trainable_params": record["n_trainable_params"],
            "first_loss": record["loss_curve"][0],
            "final_loss": record["final_loss"],
            "n_trained_facts": len(record["trained_fact_ids"]),
            "n_target_answers": len(record["target_answers"]),
            "n_forbidden_targets": len(record["forbidden_targets"]),
            "n_train_words": len(record["train_words"]),
        }
    }
    if prompts_summary is not None:
        from ..artifacts import Prompts

        card["finetune"]["n_excluded_trained"] = prompts_summary[Prompts.n_excluded_trained]
        card["finetune"]["excluded_by_reason"] = prompts_summary[Prompts.excluded_by_reason]
    return card


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
    from ..model_folder import check_no_remote_code
    from ..toy import read_training_record

    check_no_remote_code(job.input.model)
    cfg = AutoConfig.from_pretrained(job.input.model, trust_remote_code=False)
    inference = io.read_json(job.input.inference)
    n_params = 0
    for f in sorted(Path(job.input.model).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():
                n_params += int(np.prod(st.get_slice(key).get_shape()))
    n_facts, n_kept = inference[Inference.n_facts], inference[Inference.n_kept]
    card = {
        C.model: job.wildcards.model,
        C.model_type: cfg.model_type,
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
    from ..finetune import read_finetune_record

    tuned = read_finetune_record(job.input.model)
    if tuned is not None:
        card.update(finetune_card(tuned, io.read_json(job.input.prompts_summary)))
        # The analysis sees only never-taught facts (the prompts step drops the others),
        # so the card's total effect is the never-taught effect. (Not the organism's
        # `total_effect_never_forbidden_log10`: the paper reads that key as "organism".)
        card["finetune"]["n_facts_never_taught"] = n_facts
        card["finetune"]["n_kept_never_taught"] = n_kept
        card["finetune"]["total_effect_never_taught_log10"] = card[C.total_effect]
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
