"""Rule `finetune_model` (workflow/rules/model.smk): glue in `forbidden_facts.steps.model`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step finetune_model --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.model import finetune_model

run(snakemake, finetune_model)  # noqa: F821 (injected by Snakemake)
