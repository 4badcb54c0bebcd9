"""Rule `figure_component_shift` (workflow/rules/figures.smk): glue in `forbidden_facts.steps.shift`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figure_component_shift --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.shift import figure_component_shift

run(snakemake, figure_component_shift)  # noqa: F821 (injected by Snakemake)
