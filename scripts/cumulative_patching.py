"""Rule `cumulative_patching` (workflow/rules/attribution.smk): glue in `forbidden_facts.steps.attribution`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step cumulative_patching --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.attribution import cumulative_patching

run(snakemake, cumulative_patching)  # noqa: F821 (injected by Snakemake)
