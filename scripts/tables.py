"""Rule `tables`: thin glue around `forbidden_facts.steps.tables`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step tables --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "tables")  # noqa: F821 (injected by Snakemake)
