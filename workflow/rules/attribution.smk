# Component attribution: first-order patching of every component (sharded over
# facts), then ranking, cumulative patching, N* and the Waluigi components.
# Shards: `scattergather: attribution` (Snakefile); each shard job takes its own
# slice of the kept facts, {scatteritem} = "<i>-of-<n>", and merge_attribution
# gathers them.


rule attribution_shard:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
    output:
        "results/{model}/{dataset}/attribution/shard-{scatteritem}.parquet",
    log:
        "logs/attribution_shard/{model}/{dataset}/shard-{scatteritem}.log",
    benchmark:
        "logs/benchmarks/attribution_shard/{model}/{dataset}/shard-{scatteritem}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=240,
    params:
        model=get_model_params,
    script:
        "../../scripts/attribution_shard.py"


rule merge_attribution:
    input:
        # attribution.shards of them, or the set the table is up to date with (common.smk).
        get_attribution_shards,
    output:
        # update(): a merge that fails (say on a truncated shard) keeps the previous table.
        update("results/{model}/{dataset}/attribution.parquet"),
    log:
        "logs/merge_attribution/{model}/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/merge_attribution.py"


rule rank_components:
    input:
        attribution=rules.merge_attribution.output[0],
        inference=rules.inference.output.table,
    output:
        "results/{model}/{dataset}/components.parquet",
    log:
        "logs/rank_components/{model}/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        model=get_model_params,
    script:
        "../../scripts/rank_components.py"


rule cumulative_patching:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
        components=rules.rank_components.output[0],
        # Only with identification.dynamic_order: each pair's own order.
        attribution=get_cumulative_attribution,
    output:
        curve="results/{model}/{dataset}/cumulative.parquet",
        pairs="results/{model}/{dataset}/cumulative_pairs.npz",
        summary="results/{model}/{dataset}/summary.json",
    log:
        "logs/cumulative_patching/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/cumulative_patching/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=120,
    params:
        model=get_model_params,
        identification=config["identification"],
    script:
        "../../scripts/cumulative_patching.py"
