"""Glue of workflow/rules/heads.smk: OV scores and forbidden-word attention of every head."""

from __future__ import annotations

import logging

import numpy as np

from .. import io
from ..artifacts import HeadGroups as HG
from ..effects import head_groups, top_head_names
from .common import inherit, kept_prompts, load, section_settings, settings

log = logging.getLogger("forbidden_facts")

__all__ = ["heads"]


def heads(job) -> None:
    from ..heads import (
        attention_example,
        forbidden_attention,
        head_table,
        ov_sample_rows,
        ov_scores,
    )

    params = section_settings(job, "heads")
    comps = io.read_parquet(job.input.components)
    prompts = kept_prompts(io.read_parquet(job.input.prompts), io.read_parquet(job.input.inference))
    example_fact = params["example_fact"] or (prompts["fact_id"].iloc[0] if len(prompts) else None)
    if example_fact is not None and str(example_fact) not in set(prompts["fact_id"].astype(str)):
        # Checked before the OV scores, which take hours on a large model.
        from ..datasets import DatasetError

        raise DatasetError(
            f"config `heads.example_fact` is {example_fact!r}, a fact of the dataset that the "
            f"model does not know, so it is not kept ({job.input.inference} lists the kept "
            f"facts; {prompts['fact_id'].nunique()} are kept, e.g. "
            f"{', '.join(map(str, prompts['fact_id'].drop_duplicates().head(3)))}). Set it to "
            "a kept fact_id, or to null for the first kept fact."
        )
    model, tokenizer = load(job, attn_implementation="eager")
    n_rows = settings(job).ov_rows or params["ov_rows"]
    rows = ov_sample_rows(model.get_input_embeddings().weight.shape[0], n_rows)
    ov = ov_scores(model, vocab_chunk=params["vocab_chunk"], rows=rows)
    attention = forbidden_attention(
        model, tokenizer, prompts, batch_size=settings(job).attribution_batch_size * 2
    )
    table = head_table(ov, attention, comps)
    prov = inherit(job.input.components, ov_rows=n_rows)
    io.write_parquet(job.output.table, table, provenance=prov)
    example = (
        attention_example(
            model, tokenizer, prompts, example_fact, top_head_names(comps, params["top_k"])
        )
        if example_fact is not None
        else {"fact_id": "", "heads": []}
    )
    with io.atomic_path(job.output.example) as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in example.items()})
    groups = head_groups(table, params["top_k"])
    log.info(
        "top-%d heads: OV %.3f vs %.3f, attention(c) %.4f vs %.4f",
        params["top_k"],
        groups[HG.top_heads_ov] or 0,
        groups[HG.other_heads_ov] or 0,
        groups[HG.top_heads_attn] or 0,
        groups[HG.other_heads_attn] or 0,
    )
