"""Rule `prepare_dataset`: thin glue around `forbidden_facts.steps.prepare_dataset`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step prepare_dataset --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "prepare_dataset")  # noqa: F821 (injected by Snakemake)
