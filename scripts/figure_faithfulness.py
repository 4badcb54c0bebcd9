"""Rule `figure_faithfulness` (workflow/rules/faithfulness.smk): glue in `forbidden_facts.steps.faithfulness`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step figure_faithfulness --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.faithfulness import figure_faithfulness

run(snakemake, figure_faithfulness)  # noqa: F821 (injected by Snakemake)
