"""Rule `rank_components`: thin glue around `forbidden_facts.steps.rank_components`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step rank_components --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "rank_components")  # noqa: F821 (injected by Snakemake)
