"""Rule `train_toy_model`: thin glue around `forbidden_facts.steps.train_toy_model`.

Run by Snakemake; to debug by hand, use `forbidden-facts run-step train_toy_model --help`.
"""

from forbidden_facts.steps import run_from_snakemake

run_from_snakemake(snakemake, "train_toy_model")  # noqa: F821 (injected by Snakemake)
