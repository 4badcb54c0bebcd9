"""Rule `figure_overview`: thin glue around `forbidden_facts.steps.figure_overview`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figure_overview --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "figure_overview")  # noqa: F821 (injected by Snakemake)
