"""Rule `model_card`: thin glue around `forbidden_facts.steps.model_card`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step model_card --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "model_card")  # noqa: F821 (injected by Snakemake)
