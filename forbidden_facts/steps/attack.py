"""Glue of workflow/rules/attack.smk: the self-insertion attack and the token search."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import io
from ..artifacts import TOKEN_SEARCH_COLUMNS
from ..artifacts import Attack as S
from .common import (
    evaluation_words,
    inherit,
    kept_prompts,
    load,
    nc1_prompts,
    section_settings,
    settings,
)

log = logging.getLogger("forbidden_facts")

__all__ = ["attack_self_insertion", "attack_tokens"]


def attack_self_insertion(job) -> None:
    from ..attack import self_insertion
    from ..prompts import irrelevant_word_candidates

    every_prompt = io.read_parquet(job.input.prompts)
    prompts = kept_prompts(every_prompt, io.read_parquet(job.input.inference))
    all_answers = every_prompt["answer"].unique()
    # Control words: evaluation words that are no substring of any answer, as for nc1.
    pool = irrelevant_word_candidates(
        evaluation_words(job.input.words, job.input.model), all_answers
    )
    # Eager attention: the attention onto the inserted word needs the weights; the passes
    # that score the attack and the control give it.
    model, tokenizer = load(job, attn_implementation="eager")
    table, summary, attention = self_insertion(
        model,
        tokenizer,
        nc1_prompts(prompts),
        pool,
        seed=job.params.attack["seed"],
        batch_size=settings(job).batch_size,
        attention=True,
    )
    summary = {S.model: job.wildcards.model, S.dataset: job.wildcards.dataset, **summary}
    prov = inherit(job.input.inference)
    io.write_parquet(job.output.table, table, provenance=prov)
    io.write_parquet(job.output.attention, attention, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "self-insertion: mean Δ log10 odds %.3f (control %.3f), top-1 flipped %.1f%% "
        "(control %.1f%%); %s",
        summary[S.attack_delta] or 0,
        summary[S.control_delta] or 0,
        100 * (summary[S.attack_flipped] or 0),
        100 * (summary[S.control_flipped] or 0),
        summary.get(S.verdict, "no facts"),
    )


def attack_tokens(job) -> None:
    from ..token_search import token_search

    params = section_settings(job, "attack")
    heads_table = io.read_parquet(job.input.heads).sort_values("rank")
    top = heads_table.head(params["top_k_heads"])
    heads = [
        (c, int(layer), int(h))
        for c, layer, h in zip(top["component"], top["layer"], top["head"], strict=True)
    ]
    nc1 = nc1_prompts(
        kept_prompts(io.read_parquet(job.input.prompts), io.read_parquet(job.input.inference))
    )
    if len(nc1) > params["n_facts"]:
        rng = np.random.default_rng(params["seed"])
        pick = np.sort(rng.choice(len(nc1), params["n_facts"], replace=False))
        nc1 = nc1.iloc[pick].reset_index(drop=True)
    # The search rebuilds its heads' attention from their queries and keys: no eager needed.
    model, tokenizer = load(job, attn_implementation="sdpa")
    table = (
        token_search(
            model,
            tokenizer,
            nc1,
            heads,
            batch_size=params["batch_size"],
            n_tokens=settings(job).token_search_tokens,
            seed=params["seed"],
        )
        if len(nc1) and heads
        else pd.DataFrame(columns=list(TOKEN_SEARCH_COLUMNS))
    )
    io.write_parquet(job.output[0], table, provenance=inherit(job.input.heads))
