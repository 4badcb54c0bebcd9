"""Rule `prompts`: thin glue around `forbidden_facts.steps.prompts`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step prompts --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "prompts")  # noqa: F821 (injected by Snakemake)
