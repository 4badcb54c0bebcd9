"""Rule `figures_attribution`: thin glue around `forbidden_facts.steps.figures_attribution`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figures_attribution --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "figures_attribution")  # noqa: F821 (injected by Snakemake)
