"""Glue of workflow/rules/faithfulness.smk: patching with recomputation of the top components."""

from __future__ import annotations

import logging

from .. import io
from .common import inherit, kept_prompts, load, section_settings, settings

log = logging.getLogger("forbidden_facts")

__all__ = ["faithfulness", "figure_faithfulness", "table_faithfulness"]


def top_components(components, top_k: int, n_star: int | None) -> list[str]:
    """The first max(top_k, N*) components by first-order rank (every one of N* included)."""
    order = list(components.sort_values("rank")["component"])
    return order[: max(top_k, n_star or 0)]


def top_heads(components, k: int) -> list[str]:
    """The first `k` heads by first-order rank: the attack's top suppressor heads."""
    heads = components[components["type"] == "head"].sort_values("rank")
    return list(heads["component"][:k])


def faithfulness(job) -> None:
    from ..artifacts import Attribution as S
    from ..artifacts import Faithfulness as F
    from ..config import schema_defaults
    from ..faithfulness import (
        attack_prediction,
        attack_summary,
        circuit_curve,
        faithfulness_summary,
        total_effects_table,
    )
    from ..recomputation import recompute

    # By hand (run-step --params) the keys left out take the schema's defaults.
    params = {
        **schema_defaults("properties", "faithfulness"),
        **section_settings(job, "faithfulness"),
    }
    comps = io.read_parquet(job.input.components)
    inference = io.read_parquet(job.input.inference)
    prompts = kept_prompts(io.read_parquet(job.input.prompts), inference)
    n_star = io.read_json(job.input.summary)[S.n_star]
    top = top_components(comps, params["top_k"], n_star)
    model, tokenizer = load(job, attn_implementation="sdpa")
    m = settings(job)
    rec = recompute(
        model,
        tokenizer,
        prompts,
        top,
        batch_size=m.attribution_batch_size,
        row_batch=params["row_batch"],
    )
    attribution = io.read_parquet(job.input.attribution)
    table = total_effects_table(rec, attribution)
    first_order = io.read_parquet(job.input.curve)["mean_log10"].to_numpy()
    curve = circuit_curve(rec, first_order)
    summary = {
        F.faith_model: job.wildcards.model,
        F.faith_dataset: job.wildcards.dataset,
        **faithfulness_summary(rec, table, n_star, params["n_bootstrap"], params["seed"]),
    }
    heads = top_heads(comps, job.params.attack_heads)
    prediction = attack_prediction(
        io.read_parquet(job.input.attack),
        io.read_parquet(job.input.attack_attention),
        attribution,
        heads,
    )
    summary[F.attack_heads] = heads
    summary.update(attack_summary(prediction, params["n_bootstrap"], params["seed"]))
    prov = inherit(job.input.components, top_k=len(top))
    io.write_parquet(job.output.effects, table, provenance=prov)
    io.write_parquet(job.output.curve, curve, provenance=prov)
    io.write_parquet(job.output.prediction, prediction, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "%d components on %d pairs: share of the total effect at N* = %s recomputed, %s "
        "for the rest; k90 recomputed %s; Spearman(direct, total) %s; %d components differ; "
        "attack: Spearman %s, AUC %s",
        len(top),
        len(rec.fact_ids),
        summary[F.recomputed_share],
        summary[F.complement_share],
        summary[F.k90_recomputed],
        summary[F.spearman_direct_total],
        summary[F.n_differing],
        summary[F.attack_spearman],
        summary[F.attack_auc],
    )


def figure_faithfulness(job) -> None:
    from .. import plots
    from .common import run_title

    out = job.output
    plots.circuit_curves(
        io.read_parquet(job.input.curve),
        io.read_json(job.input.summary),
        out.png,
        out.pdf,
        title=run_title(job),
    )
    plots.attack_prediction(
        io.read_parquet(job.input.prediction),
        io.read_json(job.input.summary),
        out.attack,
        out.attack_pdf,
        title=run_title(job),
    )


def table_faithfulness(job) -> None:
    """Render paper/templates/faithfulness.tex.j2 for every (model, dataset) of config `run`.

    Inputs: ``summaries`` (faithfulness.json, one per pair of ``params.models`` /
    ``params.datasets``) and ``template``; the first pair's figures are shown.
    """
    from ..tables_latex import render

    summaries = list(job.input.summaries)
    pairs = list(zip(job.params.models, job.params.datasets, strict=True))
    if len(summaries) != len(pairs):
        raise ValueError(
            f"rule table_faithfulness: {len(summaries)} summaries for {len(pairs)} (model, "
            "dataset) pairs; check workflow/rules/faithfulness.smk"
        )
    runs = [
        {
            "model": model,
            "dataset": dataset,
            "summary": io.read_json(path),
            "figure": "figures/circuit_curves.pdf" if i == 0 else None,
            "attack_figure": "figures/attack_prediction.pdf" if i == 0 else None,
        }
        for i, ((model, dataset), path) in enumerate(zip(pairs, summaries, strict=True))
    ]
    text = render(job.input.template, {"faith_runs": runs})
    with io.atomic_path(job.output[0]) as tmp:
        tmp.write_text(text)
    log.info("faithfulness section for %d run(s)", len(runs))
