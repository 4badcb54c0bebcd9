"""Rule `download_model`: thin glue around `forbidden_facts.steps.download_model`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step download_model --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "download_model")  # noqa: F821 (injected by Snakemake)
