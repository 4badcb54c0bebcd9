"""Rule `figures_attribution` (workflow/rules/figures.smk): glue in `forbidden_facts.steps.figures`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figures_attribution --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.figures import figures_attribution

run(snakemake, figures_attribution)  # noqa: F821 (injected by Snakemake)
