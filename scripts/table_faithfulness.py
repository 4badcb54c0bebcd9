"""Rule `table_faithfulness` (workflow/rules/faithfulness.smk): glue in `forbidden_facts.steps.faithfulness`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step table_faithfulness --help`.
"""

from forbidden_facts.steps import run
from forbidden_facts.steps.faithfulness import table_faithfulness

run(snakemake, table_faithfulness)  # noqa: F821 (injected by Snakemake)
