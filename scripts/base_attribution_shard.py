"""Rule `base_attribution_shard` (workflow/rules/shift.smk): glue in `forbidden_facts.steps.shift`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step base_attribution_shard --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.shift import base_attribution_shard

run(snakemake, base_attribution_shard)  # noqa: F821 (injected by Snakemake)
