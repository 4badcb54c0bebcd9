"""Rule `merge_attribution` (workflow/rules/attribution.smk): glue in `forbidden_facts.steps.attribution`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step merge_attribution --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.attribution import merge_attribution

run(snakemake, merge_attribution)  # noqa: F821 (injected by Snakemake)
