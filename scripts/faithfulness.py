"""Rule `faithfulness` (workflow/rules/faithfulness.smk): glue in `forbidden_facts.steps.faithfulness`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step faithfulness --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.faithfulness import faithfulness

run(snakemake, faithfulness)  # noqa: F821 (injected by Snakemake)
