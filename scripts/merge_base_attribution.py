"""Rule `merge_base_attribution` (workflow/rules/shift.smk): glue in `forbidden_facts.steps.shift`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step merge_base_attribution --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.shift import merge_base_attribution

run(snakemake, merge_base_attribution)  # noqa: F821 (injected by Snakemake)
