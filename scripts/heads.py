"""Rule `heads` (workflow/rules/heads.smk): glue in `forbidden_facts.steps.heads`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step heads --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.heads import heads

run(snakemake, heads)  # noqa: F821 (injected by Snakemake)
