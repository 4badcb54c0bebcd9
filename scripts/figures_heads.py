"""Rule `figures_heads`: thin glue around `forbidden_facts.steps.figures_heads`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figures_heads --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "figures_heads")  # noqa: F821 (injected by Snakemake)
