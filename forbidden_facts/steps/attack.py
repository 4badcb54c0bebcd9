"""Glue of workflow/rules/attack.smk: the self-insertion attack and the token search."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import io
from .common import (
    evaluation_words,
    inherit,
    kept_prompts,
    load,
    model_settings,
    nc1_prompts,
    section_settings,
)

log = logging.getLogger("forbidden_facts")

__all__ = ["attack_self_insertion", "attack_tokens"]


def attack_self_insertion(job) -> None:
    from ..attack import self_insertion
    from ..prompts import irrelevant_word_candidates

    prompts = kept_prompts(job.input.prompts, job.input.inference)
    all_answers = io.read_parquet(job.input.prompts)["answer"].unique()
    # Control words: evaluation words that are no substring of any answer, as for nc1.
    pool = irrelevant_word_candidates(
        evaluation_words(job.input.words, job.input.model), all_answers
    )
    model, tokenizer = load(job, attn_implementation="sdpa")
    table, summary = self_insertion(
        model,
        tokenizer,
        nc1_prompts(prompts),
        pool,
        seed=job.params.attack["seed"],
        batch_size=model_settings(job)["batch_size"],
    )
    summary = {"model": job.wildcards.model, "dataset": job.wildcards.dataset, **summary}
    prov = inherit(job.input.inference)
    io.write_parquet(job.output.table, table, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "self-insertion: mean Δ log10 odds %.3f (control %.3f), top-1 flipped %.1f%% (control %.1f%%)",
        summary["mean_delta_logodds_log10"] or 0,
        summary["control_mean_delta_logodds_log10"] or 0,
        100 * (summary["frac_top1_flipped"] or 0),
        100 * (summary["control_frac_top1_flipped"] or 0),
    )


def attack_tokens(job) -> None:
    from ..attack import TOKEN_SEARCH_COLUMNS, token_search

    params = section_settings(job, "attack")
    heads_table = io.read_parquet(job.input.heads).sort_values("rank")
    top = heads_table.head(params["top_k_heads"])
    heads = [
        (c, int(layer), int(h))
        for c, layer, h in zip(top["component"], top["layer"], top["head"], strict=True)
    ]
    nc1 = nc1_prompts(kept_prompts(job.input.prompts, job.input.inference))
    if len(nc1) > params["n_facts"]:
        rng = np.random.default_rng(params["seed"])
        pick = np.sort(rng.choice(len(nc1), params["n_facts"], replace=False))
        nc1 = nc1.iloc[pick].reset_index(drop=True)
    model, tokenizer = load(job, attn_implementation="eager")
    table = (
        token_search(
            model,
            tokenizer,
            nc1,
            heads,
            batch_size=params["batch_size"],
            n_tokens=model_settings(job)["token_search_tokens"],
            seed=params["seed"],
        )
        if len(nc1) and heads
        else pd.DataFrame(columns=TOKEN_SEARCH_COLUMNS)
    )
    io.write_parquet(job.output[0], table, provenance=inherit(job.input.heads))
