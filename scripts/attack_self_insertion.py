"""Rule `attack_self_insertion` (workflow/rules/attack.smk): glue in `forbidden_facts.steps.attack`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step attack_self_insertion --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.attack import attack_self_insertion

run(snakemake, attack_self_insertion)  # noqa: F821 (injected by Snakemake)
