"""Rule `attribution_shard`: thin glue around `forbidden_facts.steps.attribution_shard`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step attribution_shard --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "attribution_shard")  # noqa: F821 (injected by Snakemake)
