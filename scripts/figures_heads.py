"""Rule `figures_heads` (workflow/rules/figures.smk): glue in `forbidden_facts.steps.figures`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figures_heads --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.figures import figures_heads

run(snakemake, figures_heads)  # noqa: F821 (injected by Snakemake)
