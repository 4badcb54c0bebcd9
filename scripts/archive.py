"""Rule `archive`: thin glue around `forbidden_facts.steps.archive`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step archive --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "archive")  # noqa: F821 (injected by Snakemake)
