"""Rule `figures_attack`: thin glue around `forbidden_facts.steps.figures_attack`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figures_attack --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "figures_attack")  # noqa: F821 (injected by Snakemake)
