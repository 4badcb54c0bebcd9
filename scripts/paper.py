"""Rule `paper` (workflow/rules/paper.smk): glue in `forbidden_facts.steps.paper`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step paper --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.paper import paper

run(snakemake, paper)  # noqa: F821 (injected by Snakemake)
