"""Rule `paper`: thin glue around `forbidden_facts.steps.paper`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step paper --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "paper")  # noqa: F821 (injected by Snakemake)
