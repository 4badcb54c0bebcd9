"""Rule `heads`: thin glue around `forbidden_facts.steps.heads`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step heads --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "heads")  # noqa: F821 (injected by Snakemake)
