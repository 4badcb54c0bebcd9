"""Rule `rank_components` (workflow/rules/attribution.smk): glue in `forbidden_facts.steps.attribution`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step rank_components --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.attribution import rank_components

run(snakemake, rank_components)  # noqa: F821 (injected by Snakemake)
