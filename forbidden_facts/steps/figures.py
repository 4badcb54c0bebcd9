"""Glue of workflow/rules/figures.smk: every figure as PNG and PDF."""

from __future__ import annotations

import numpy as np

from .. import io
from .common import run_title

__all__ = ["figure_overview", "figures_attribution", "figures_heads", "figures_attack"]


def figure_overview(job) -> None:
    from .. import plots

    plots.overview(
        io.read_parquet(job.input.inference), job.output.png, job.output.pdf, title=run_title(job)
    )


def figures_attribution(job) -> None:
    from .. import plots

    comps = io.read_parquet(job.input.components)
    curve = io.read_parquet(job.input.curve)
    summary = io.read_json(job.input.summary)
    out = job.output
    title = run_title(job)
    plots.top_components(comps, out.top, out.top_pdf, top_n=job.params.top_n, title=title)
    plots.cumulative(curve, summary, out.cumulative, out.cumulative_pdf, title=title)
    plots.independence(curve, out.independence, out.independence_pdf, title=title)
    plots.layer_head_heatmap(comps, out.heatmap, out.heatmap_pdf, title=title)
    plots.luigi_waluigi(comps, out.waluigi, out.waluigi_pdf, top_n=job.params.top_n, title=title)


def figures_heads(job) -> None:
    from .. import plots
    from ..effects import top_head_names

    heads_table = io.read_parquet(job.input.heads)
    top = top_head_names(heads_table, job.params.top_k)
    example = {k: v.tolist() if v.ndim == 1 else v for k, v in np.load(job.input.example).items()}
    example["fact_id"] = str(np.load(job.input.example)["fact_id"])
    out = job.output
    plots.head_statistics(heads_table, top, out.stats, out.stats_pdf, title=run_title(job))
    plots.attention_pattern(example, out.pattern, out.pattern_pdf, title=run_title(job))


def figures_attack(job) -> None:
    from .. import plots

    out = job.output
    plots.attack_vs_control(
        io.read_parquet(job.input.attack), out.versus, out.versus_pdf, title=run_title(job)
    )
    plots.attack_tokens(
        io.read_parquet(job.input.tokens), out.tokens, out.tokens_pdf, title=run_title(job)
    )
