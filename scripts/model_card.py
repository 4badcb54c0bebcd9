"""Rule `model_card` (workflow/rules/card.smk): glue in `forbidden_facts.steps.card`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step model_card --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.card import model_card

run(snakemake, model_card)  # noqa: F821 (injected by Snakemake)
