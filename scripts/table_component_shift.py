"""Rule `table_component_shift` (workflow/rules/paper.smk): glue in `forbidden_facts.steps.shift`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step table_component_shift --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.shift import table_component_shift

run(snakemake, table_component_shift)  # noqa: F821 (injected by Snakemake)
