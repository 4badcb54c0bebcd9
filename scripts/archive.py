"""Rule `archive` (workflow/rules/paper.smk): glue in `forbidden_facts.steps.paper`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step archive --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.paper import archive

run(snakemake, archive)  # noqa: F821 (injected by Snakemake)
