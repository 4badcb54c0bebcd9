"""Rule `merge_attribution`: thin glue around `forbidden_facts.steps.merge_attribution`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step merge_attribution --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "merge_attribution")  # noqa: F821 (injected by Snakemake)
