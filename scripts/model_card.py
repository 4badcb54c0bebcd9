"""Rule `model_card` (workflow/rules/model.smk): glue in `forbidden_facts.steps.model`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step model_card --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.model import model_card

run(snakemake, model_card)  # noqa: F821 (injected by Snakemake)
