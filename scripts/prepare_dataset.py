"""Rule `prepare_dataset` (workflow/rules/prompts.smk): glue in `forbidden_facts.steps.prompts`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step prepare_dataset --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.prompts import prepare_dataset

run(snakemake, prepare_dataset)  # noqa: F821 (injected by Snakemake)
