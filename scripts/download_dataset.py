"""Rule `download_dataset`: thin glue around `forbidden_facts.steps.download_dataset`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step download_dataset --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "download_dataset")  # noqa: F821 (injected by Snakemake)
