"""Rule `prompts` (workflow/rules/prompts.smk): glue in `forbidden_facts.steps.prompts`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step prompts --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.prompts import prompts

run(snakemake, prompts)  # noqa: F821 (injected by Snakemake)
