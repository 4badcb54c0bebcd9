"""Rule `attack_self_insertion`: thin glue around `forbidden_facts.steps.attack_self_insertion`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step attack_self_insertion --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "attack_self_insertion")  # noqa: F821 (injected by Snakemake)
