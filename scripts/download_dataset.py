"""Rule `download_dataset` (workflow/rules/prompts.smk): glue in `forbidden_facts.steps.prompts`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step download_dataset --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.prompts import download_dataset

run(snakemake, download_dataset)  # noqa: F821 (injected by Snakemake)
