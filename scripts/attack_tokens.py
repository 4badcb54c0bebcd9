"""Rule `attack_tokens` (workflow/rules/attack.smk): glue in `forbidden_facts.steps.attack`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step attack_tokens --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.attack import attack_tokens

run(snakemake, attack_tokens)  # noqa: F821 (injected by Snakemake)
