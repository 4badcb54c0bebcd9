"""Rule `base_inference` (workflow/rules/shift.smk): glue in `forbidden_facts.steps.shift`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step base_inference --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.shift import base_inference

run(snakemake, base_inference)  # noqa: F821 (injected by Snakemake)
