# forbidden-facts: a replication of "Forbidden Facts" (arXiv 2312.08793).
# This file is the table of contents; each stage lives in workflow/rules/.
from pathlib import Path

from snakemake.utils import min_version

from forbidden_facts.config import check_yaml_file

min_version("9.0")

# Snakemake's own loader names neither the file nor the line of a YAML syntax error.
check_yaml_file(Path(workflow.basedir) / "config/config.yaml")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# No earlier output is deleted before its job runs: a job that fails or is stopped
# leaves it in place (the step swaps its new outputs in only when complete, and
# forbidden_facts.safekeep repairs Snakemake's records of the old ones).
outputflags:
    update,


include: "workflow/rules/common.smk"


# Attribution runs as config `attribution.shards` jobs over the facts (one GPU job
# each on a cluster); `--set-scatter attribution=N` overrides the count.
scattergather:
    attribution=config["attribution"]["shards"],


include: "workflow/rules/model.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/shift.smk"
include: "workflow/rules/heads.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/faithfulness.smk"
include: "workflow/rules/card.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/paper.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
