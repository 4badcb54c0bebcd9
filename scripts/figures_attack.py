"""Rule `figures_attack` (workflow/rules/figures.smk): glue in `forbidden_facts.steps.figures`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figures_attack --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.figures import figures_attack

run(snakemake, figures_attack)  # noqa: F821 (injected by Snakemake)
