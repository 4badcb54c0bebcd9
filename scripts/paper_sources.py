"""Rule `paper_sources` (workflow/rules/paper.smk): glue in `forbidden_facts.steps.paper`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step paper_sources --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.paper import paper_sources

run(snakemake, paper_sources)  # noqa: F821 (injected by Snakemake)
