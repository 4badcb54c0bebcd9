"""Rule `figure_overview` (workflow/rules/figures.smk): glue in `forbidden_facts.steps.figures`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figure_overview --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.figures import figure_overview

run(snakemake, figure_overview)  # noqa: F821 (injected by Snakemake)
