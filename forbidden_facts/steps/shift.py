"""Glue of workflow/rules/shift.smk: a derived model's base measured on the derived model's facts.

For a model whose config block names ``base: B``, B is run (inference and first-order
patching) on exactly the derived model's kept facts and prompts, and
`forbidden_facts.shift.component_shift` compares the two per component.
"""

from __future__ import annotations

import logging

import pandas as pd

from .. import io
from ..artifacts import ComponentShift as CS
from ..units import LN10
from .attribution import attribute_facts, merge_attribution, shard_of
from .common import inherit, kept_prompts, load, settings

log = logging.getLogger("forbidden_facts")

__all__ = [
    "base_inference",
    "base_attribution_shard",
    "merge_base_attribution",
    "component_shift",
    "figure_component_shift",
    "table_component_shift",
]


def _base(job) -> dict:
    return {"base_model": job.params.base, "base_model_dir": str(job.input.model)}


def base_inference(job) -> None:
    """The base model's p_correct and log-odds on the derived model's kept prompts."""
    from ..inference import run_inference
    from ..modeling import load_tokenizer

    prompts = kept_prompts(io.read_parquet(job.input.prompts), io.read_parquet(job.input.inference))
    model, tokenizer = load(job, attn_implementation="sdpa", model=job.params.base)
    if tokenizer.get_vocab() != load_tokenizer(job.input.derived).get_vocab():
        raise ValueError(
            f"config `models.{job.wildcards.model}.base` is {job.params.base!r}, whose "
            f"tokenizer ({job.input.model}) differs from {job.wildcards.model}'s "
            f"({job.input.derived}): the derived model's prompts and answer tokens would not "
            "mean the same to the base. Set `base` to the model it was derived from, which "
            "shares its tokenizer, or to null."
        )
    table = run_inference(
        model, tokenizer, prompts, batch_size=settings(job, job.params.base).batch_size
    )
    io.write_parquet(job.output[0], table, provenance=inherit(job.input.inference, **_base(job)))
    log.info(
        "base %s on %d kept facts of %s: it keeps %d of them itself",
        job.params.base,
        table["fact_id"].nunique(),
        job.wildcards.model,
        table.loc[table["kept"], "fact_id"].nunique(),
    )


def base_attribution_shard(job) -> None:
    """First-order patching of the base model on one shard of the derived model's kept facts."""
    shard, n = shard_of(job.wildcards.scatteritem)
    table, n_facts = attribute_facts(job, shard, n, model_name=job.params.base)
    io.write_parquet(
        job.output[0],
        table,
        provenance=inherit(job.input.inference, shard=job.wildcards.scatteritem, **_base(job)),
    )
    log.info("base %s, shard %d of %d: %d facts", job.params.base, shard + 1, n, n_facts)


def merge_base_attribution(job) -> None:
    """The base model's shards in one table (as merge_attribution)."""
    merge_attribution(job)


def _tolerance(inference: pd.DataFrame, dtype: str) -> float:
    from ..identification import logodds_scale, noise_tolerance

    # Every row is a kept fact of the derived model: the scale is over all of them,
    # whether or not the base itself knows the fact.
    return noise_tolerance(dtype, logodds_scale(inference.assign(kept=True)))


def component_shift(job) -> None:
    from ..inference import pair_bayes_factors
    from ..intervals import fact_interval
    from ..shift import component_shift as shift
    from ..shift import shift_summary
    from ..units import to_log10

    before = io.read_parquet(job.input.base_attribution)
    after = io.read_parquet(job.input.attribution)
    inference = io.read_parquet(job.input.inference)
    base_inference = io.read_parquet(job.input.base_inference)
    tol_before = _tolerance(base_inference, job.params.base_dtype)
    tol_after = _tolerance(inference[inference["kept"]], job.params.model["dtype"])
    labels = list(dict.fromkeys(after["component"]))
    table = shift(before, after, tol_before, tol_after, label_order=labels)
    effects = {}
    for name, inf in (("before", base_inference.assign(kept=True)), ("after", inference)):
        lbf = pair_bayes_factors(inf)
        mean, low, high = fact_interval(-to_log10(lbf["lbf"].to_numpy()), list(lbf["fact_id"]))
        effects[getattr(CS, f"total_effect_{name}_log10")] = mean
        effects[getattr(CS, f"total_effect_{name}_ci")] = [low, high]
    summary = {
        CS.model_name: job.wildcards.model,
        CS.dataset_name: job.wildcards.dataset,
        CS.base_model: job.params.base,
        **shift_summary(table),
        **effects,
        CS.n_kept_by_base: int(base_inference.loc[base_inference["kept"], "fact_id"].nunique()),
        CS.noise_tolerance_before_log10: tol_before / LN10,
        CS.noise_tolerance_after_log10: tol_after / LN10,
        CS.ci_unit: "fact",
    }
    prov = inherit(job.input.attribution, base_model=job.params.base)
    io.write_parquet(job.output.table, table, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "%s vs its base %s on %d facts: %d of %d components changed role",
        job.wildcards.model,
        job.params.base,
        summary["n_facts"],
        summary[CS.n_role_changed],
        summary["n_components"],
    )


def figure_component_shift(job) -> None:
    from .. import plots
    from .common import run_title

    plots.component_shift(
        io.read_parquet(job.input.shift),
        job.output.png,
        job.output.pdf,
        title=run_title(job),
        base=job.params.base,
    )


def table_component_shift(job) -> None:
    """Render paper/templates/component_shift.tex.j2 for every derived model of config `run`.

    Inputs: ``tables`` and ``summaries`` (one per pair of ``params.models`` /
    ``params.datasets``), ``template``. With no pair the output says so in a LaTeX comment
    and the paper has no comparison section.
    """
    from ..shift import paper_context
    from ..tables_latex import render

    tables = list(job.input.tables)
    summaries = list(job.input.summaries)
    pairs = list(zip(job.params.models, job.params.datasets, strict=True))
    if not len(tables) == len(summaries) == len(pairs):
        raise ValueError(
            f"rule table_component_shift: {len(tables)} tables and {len(summaries)} "
            f"summaries for {len(pairs)} (model, dataset) pairs; check workflow/rules/paper.smk"
        )
    runs = [
        {
            "model": model,
            "dataset": dataset,
            "base": job.params.bases[model],
            "summary": io.read_json(summary),
            "table": io.read_parquet(table),
        }
        for (model, dataset), table, summary in zip(pairs, tables, summaries, strict=True)
    ]
    context = paper_context(runs, figure="figures/component_shift.pdf" if runs else None)
    text = render(job.input.template, context)
    with io.atomic_path(job.output[0]) as tmp:
        tmp.write_text(text)
    log.info("component_shift table for %d derived model(s)", len(runs))
