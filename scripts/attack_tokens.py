"""Rule `attack_tokens`: thin glue around `forbidden_facts.steps.attack_tokens`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step attack_tokens --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "attack_tokens")  # noqa: F821 (injected by Snakemake)
