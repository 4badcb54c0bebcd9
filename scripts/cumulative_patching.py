"""Rule `cumulative_patching`: thin glue around `forbidden_facts.steps.cumulative_patching`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step cumulative_patching --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "cumulative_patching")  # noqa: F821 (injected by Snakemake)
