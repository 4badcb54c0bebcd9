"""Rule `inference`: thin glue around `forbidden_facts.steps.inference`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step inference --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "inference")  # noqa: F821 (injected by Snakemake)
