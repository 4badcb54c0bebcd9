"""Glue of workflow/rules/attribution.smk: patching shards, ranking, cumulative patching."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import io
from .common import inherit, kept_prompts, load

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


def attribute_facts(job, shard: int, n: int) -> tuple[pd.DataFrame, int]:
    """First-order patching of the job's model on shard `shard` of `n` of the kept facts.

    The kept facts are those of ``job.input.inference``; the model is ``job.input.model``
    (the base model's attribution runs it on a derived model's kept facts and prompts).

    Returns:
        (the long attribution table, the number of facts in the shard).
    """
    from ..patching import attribute, shard_facts

    prompts = kept_prompts(job.input.prompts, job.input.inference)
    order = list(dict.fromkeys(prompts["fact_id"]))
    mine = set(shard_facts(order, shard, n))
    prompts = prompts[prompts["fact_id"].isin(mine)]
    model, tokenizer = load(job, attn_implementation="sdpa")
    m = job.params.model
    frames = (
        list(
            attribute(
                model,
                tokenizer,
                prompts,
                batch_size=m["attribution_batch_size"],
                row_batch=m["row_batch"],
            )
        )
        if len(prompts)
        else []
    )
    columns = ["fact_id", "pair", "direction", "component", "delta_logodds"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return table, len(mine)


def attribution_shard(job) -> None:
    shard, n = shard_of(job.wildcards.scatteritem)
    table, n_facts = attribute_facts(job, shard, n)
    io.write_parquet(
        job.output[0],
        table,
        provenance=inherit(job.input.inference, shard=job.wildcards.scatteritem),
    )
    log.info("shard %d of %d: %d facts, %d rows", shard + 1, n, n_facts, len(table))


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
    dtype = job.params.model["dtype"]
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
    from ..identification import (
        bootstrap_n_star,
        cumulative_curve,
        dynamic_curve,
        fact_interval,
        k_shares,
        logodds_scale,
        n_star,
        n_star_context,
        noise_tolerance,
        promotive_summary,
    )
    from ..inference import pair_bayes_factors
    from ..patching import cumulative_to_n_star

    params = job.params.identification
    comps = io.read_parquet(job.input.components)
    inference = io.read_parquet(job.input.inference)
    prompts = kept_prompts(job.input.prompts, job.input.inference)
    model, tokenizer = load(job, attn_implementation="sdpa")
    m = job.params.model
    order = list(comps["component"])
    lbf = pair_bayes_factors(inference).set_index(["fact_id", "pair"])["lbf"]
    values, fact_ids, pairs, effect, ns = cumulative_to_n_star(
        model,
        tokenizer,
        prompts,
        order,
        lbf,
        k_min=params["k_min"],
        batch_size=m["attribution_batch_size"],
        row_batch=m["row_batch"],
    )
    total, total_low, total_high = fact_interval(effect, fact_ids)
    k = values.shape[1]
    curve = cumulative_curve(values, order[:k], comps["mean_log10"].to_numpy()[:k])
    dynamic = None
    if params["dynamic_order"]:
        dynamic = _dynamic_values(job, model, tokenizer, prompts, order[:k], fact_ids, pairs)
        curve = curve.assign(**dynamic_curve(dynamic))
    ci_low, ci_high, ci_share = bootstrap_n_star(
        values, effect, fact_ids, params["n_bootstrap"], params["seed"]
    )
    top = comps.iloc[0]
    star = comps.iloc[:ns] if ns else comps.iloc[:0]
    mean_curve = curve["mean_log10"].to_numpy()
    summary = {
        "model": job.wildcards.model,
        "dataset": job.wildcards.dataset,
        "n_kept": int(len(set(fact_ids))),
        "n_pairs": int(len(fact_ids)),
        "n_components": int(len(order)),
        "total_effect_log10": total,
        # Every interval and test is over facts (the per-fact mean of its pairs, or a
        # cluster bootstrap over facts for N*).
        "ci_unit": "fact",
        "total_effect_ci": [total_low, total_high],
        # Forbidding the answer lowers it: the total effect's interval lies above 0.
        "suppresses": bool(total_low > 0),
        "noise_tolerance_log10": noise_tolerance(m["dtype"], logodds_scale(inference)) / np.log(10),
        "n_star": ns,
        "n_star_heads": int((star["type"] == "head").sum()),
        "n_star_mlps": int((star["type"] == "mlp").sum()),
        "n_star_embed": int((star["type"] == "embed").sum()),
        "n_star_ci": [ci_low, ci_high],
        "n_star_ci_share_found": ci_share,
        **n_star_context(mean_curve, total, ns, len(order)),
        **k_shares(mean_curve, total),
        "top_component": top["component"],
        "top_component_mean_log10": float(top["mean_log10"]),
        "n_suppressive_significant": int((comps["role"] == "suppressive").sum()),
        **promotive_summary(comps),
        "curve_k_max": int(k),
        "dynamic_order": dynamic is not None,
    }
    if dynamic is not None:
        # The paper's per-pair order, on the same curve length as the fixed order.
        dyn_mean = curve["mean_log10_dynamic"].to_numpy()
        summary["n_star_dynamic"] = n_star(dyn_mean, total)
        summary.update({f"{key}_dynamic": v for key, v in k_shares(dyn_mean, total).items()})
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
            **({"values_log10_dynamic": dynamic} if dynamic is not None else {}),
        )
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "N* = %s of %d components (total effect %.3f log10; degenerate: %s), top %s",
        ns,
        len(order),
        total,
        summary["n_star_degenerate_reason"],
        top["component"],
    )


def _dynamic_values(job, model, tokenizer, prompts, order, fact_ids, pairs) -> np.ndarray:
    """Cumulative log10 BF per pair, each pair patched in its own order (the paper's dynamic
    order), for k = 1..len(order); rows in the fixed-order curve's pair order."""
    from ..identification import dynamic_orders
    from ..patching import cumulative
    from ..units import to_log10

    attribution = io.read_parquet(job.input.attribution)
    orders = dynamic_orders(attribution, list(dict.fromkeys(attribution["component"])))
    m = job.params.model
    values, dyn_facts, dyn_pairs = cumulative(
        model,
        tokenizer,
        prompts,
        order,
        batch_size=m["attribution_batch_size"],
        row_batch=m["row_batch"],
        pair_orders=orders,
    )
    if (dyn_facts, dyn_pairs) != (list(fact_ids), list(pairs)):
        raise RuntimeError("the dynamic-order pass met the pairs in another order")
    return to_log10(values)
