"""Rule `tables` (workflow/rules/paper.smk): glue in `forbidden_facts.steps.paper`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step tables --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.paper import tables

run(snakemake, tables)  # noqa: F821 (injected by Snakemake)
