"""Rule `local_model_weights` (workflow/rules/model.smk): glue in `forbidden_facts.steps.model`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step local_model_weights --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.model import local_model_weights

run(snakemake, local_model_weights)  # noqa: F821 (injected by Snakemake)
