"""Rule `train_toy_model` (workflow/rules/model.smk): glue in `forbidden_facts.steps.model`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step train_toy_model --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.model import train_toy_model

run(snakemake, train_toy_model)  # noqa: F821 (injected by Snakemake)
