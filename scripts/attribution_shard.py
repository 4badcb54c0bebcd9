"""Rule `attribution_shard` (workflow/rules/attribution.smk): glue in `forbidden_facts.steps.attribution`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step attribution_shard --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.attribution import attribution_shard

run(snakemake, attribution_shard)  # noqa: F821 (injected by Snakemake)
