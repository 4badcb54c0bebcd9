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
    pdfs = dict(
        zip(
            ["top", "cumulative", "independence", "heatmap", "waluigi"],
            job.output.pdfs,
            strict=True,
        )
    )
    title = run_title(job)
    plots.top_components(comps, job.output.top, pdfs["top"], top_n=job.params.top_n, title=title)
    plots.cumulative(curve, summary, job.output.cumulative, pdfs["cumulative"], title=title)
    plots.independence(curve, job.output.independence, pdfs["independence"], title=title)
    plots.layer_head_heatmap(comps, job.output.heatmap, pdfs["heatmap"], title=title)
    plots.luigi_waluigi(
        comps, job.output.waluigi, pdfs["waluigi"], top_n=job.params.top_n, title=title
    )


def figures_heads(job) -> None:
    from .. import plots

    heads_table = io.read_parquet(job.input.heads)
    top = list(heads_table.nsmallest(job.params.top_k, "rank")["component"])
    example = {k: v.tolist() if v.ndim == 1 else v for k, v in np.load(job.input.example).items()}
    example["fact_id"] = str(np.load(job.input.example)["fact_id"])
    pdfs = dict(zip(["stats", "pattern"], job.output.pdfs, strict=True))
    plots.head_statistics(heads_table, top, job.output.stats, pdfs["stats"], title=run_title(job))
    plots.attention_pattern(example, job.output.pattern, pdfs["pattern"], title=run_title(job))


def figures_attack(job) -> None:
    from .. import plots

    pdfs = dict(zip(["versus", "tokens"], job.output.pdfs, strict=True))
    plots.attack_vs_control(
        io.read_parquet(job.input.attack), job.output.versus, pdfs["versus"], title=run_title(job)
    )
    plots.attack_tokens(
        io.read_parquet(job.input.tokens), job.output.tokens, pdfs["tokens"], title=run_title(job)
    )
