"""Rule `component_shift` (workflow/rules/shift.smk): glue in `forbidden_facts.steps.shift`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step component_shift --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.shift import component_shift

run(snakemake, component_shift)  # noqa: F821 (injected by Snakemake)
