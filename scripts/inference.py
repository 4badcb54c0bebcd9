"""Rule `inference` (workflow/rules/prompts.smk): glue in `forbidden_facts.steps.prompts`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step inference --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.prompts import inference

run(snakemake, inference)  # noqa: F821 (injected by Snakemake)
