"""Glue of workflow/rules/attribution.smk: patching shards, ranking, cumulative patching."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import io
from ..artifacts import ATTRIBUTION_COLUMNS
from .common import inherit, kept_prompts, load, settings

log = logging.getLogger("forbidden_facts")

__all__ = ["attribution_shard", "merge_attribution", "rank_components", "cumulative_patching"]


def shard_of(scatteritem: str) -> tuple[int, int]:
    """Shard index (from 0) and shard count of Snakemake's ``{scatteritem}``, ``"<i>-of-<n>"``.

    Snakemake numbers scatter items from 1; `patching.shard_facts` counts from 0.
    """
    i, sep, n = scatteritem.partition("-of-")
    if not (sep and i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise ValueError(
            f"wildcard scatteritem={scatteritem!r} is not '<i>-of-<n>' with 1 <= i <= n "
            "(e.g. --wildcard scatteritem=1-of-2 for forbidden-facts run-step)"
        )
    return int(i) - 1, int(n)


def attribution_shard(job) -> None:
    from ..patching import attribute, shard_facts

    shard, n = shard_of(job.wildcards.scatteritem)
    prompts = kept_prompts(io.read_parquet(job.input.prompts), io.read_parquet(job.input.inference))
    order = list(dict.fromkeys(prompts["fact_id"]))
    mine = set(shard_facts(order, shard, n))
    prompts = prompts[prompts["fact_id"].isin(mine)]
    model, tokenizer = load(job, attn_implementation="sdpa")
    m = settings(job)
    frames = (
        list(
            attribute(
                model,
                tokenizer,
                prompts,
                batch_size=m.attribution_batch_size,
                row_batch=m.row_batch,
            )
        )
        if len(prompts)
        else []
    )
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(ATTRIBUTION_COLUMNS))
    )
    io.write_parquet(
        job.output[0],
        table,
        provenance=inherit(job.input.inference, shard=job.wildcards.scatteritem),
    )
    log.info("shard %d of %d: %d facts, %d rows", shard + 1, n, len(mine), len(table))


def merge_attribution(job) -> None:
    if not len(job.input):
        raise ValueError("merge_attribution needs the shard files as its inputs (--input PATH)")
    # A shard cut short (a full disk, a copy interrupted) is named with its fix
    # before anything is read; the previous attribution.parquet stays in place.
    for path in job.input:
        problem = io.check_readable(path)
        if problem:
            raise ValueError(problem)
    frames = [io.read_parquet(p) for p in job.input]
    table = pd.concat(frames, ignore_index=True)
    prov = inherit(job.input[0])
    prov.pop("shard", None)
    prov["n_shards"] = len(frames)
    io.write_parquet(job.output[0], table, provenance=prov)


def rank_components(job) -> None:
    from ..identification import logodds_scale, noise_tolerance
    from ..identification import rank_components as rank

    attribution = io.read_parquet(job.input.attribution)
    labels = list(dict.fromkeys(attribution["component"]))
    dtype = settings(job).dtype
    tolerance = noise_tolerance(dtype, logodds_scale(io.read_parquet(job.input.inference)))
    table = rank(attribution, labels, tolerance=tolerance)
    io.write_parquet(job.output[0], table, provenance=inherit(job.input.attribution))
    log.info(
        "%d components; %d within float noise of %s (|mean| <= %.2g natural log-odds)",
        len(table),
        int(table["within_noise"].sum()),
        dtype,
        tolerance,
    )


def cumulative_patching(job) -> None:
    from ..artifacts import Attribution as S
    from ..identification import (
        attribution_summary,
        bootstrap_n_star,
        cumulative_curve,
        logodds_scale,
        noise_tolerance,
    )
    from ..inference import pair_bayes_factors
    from ..patching import cumulative_to_n_star
    from ..units import LN10

    params = job.params.identification
    comps = io.read_parquet(job.input.components)
    inference = io.read_parquet(job.input.inference)
    prompts = kept_prompts(io.read_parquet(job.input.prompts), inference)
    model, tokenizer = load(job, attn_implementation="sdpa")
    m = settings(job)
    order = list(comps["component"])
    lbf = pair_bayes_factors(inference).set_index(["fact_id", "pair"])["lbf"]
    values, fact_ids, pairs, effect, ns = cumulative_to_n_star(
        model,
        tokenizer,
        prompts,
        order,
        lbf,
        k_min=params["k_min"],
        batch_size=m.attribution_batch_size,
        row_batch=m.row_batch,
    )
    k = values.shape[1]
    curve = cumulative_curve(values, order[:k], comps["mean_log10"].to_numpy()[:k])
    n_star_ci = bootstrap_n_star(values, effect, fact_ids, params["n_bootstrap"], params["seed"])
    tolerance = noise_tolerance(m.dtype, logodds_scale(inference)) / LN10
    summary = {
        S.model_name: job.wildcards.model,
        S.dataset_name: job.wildcards.dataset,
        **attribution_summary(comps, values, effect, fact_ids, ns, n_star_ci, tolerance),
    }
    prov = inherit(job.input.components)
    io.write_parquet(job.output.curve, curve, provenance=prov)
    with io.atomic_path(job.output.pairs) as tmp:
        np.savez_compressed(
            tmp,
            values_log10=values,
            fact_id=np.asarray(fact_ids),
            pair=np.asarray(pairs),
            components=np.asarray(order[:k]),
            effect_log10=effect,
        )
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "N* = %s of %d components (total effect %.3f log10; degenerate: %s), top %s",
        ns,
        len(order),
        summary[S.total_effect],
        summary[S.n_star_reason],
        summary[S.top_component],
    )
