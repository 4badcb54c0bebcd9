# Component attribution: first-order patching of every component (sharded over
# facts), then ranking, cumulative patching, N* and the Waluigi components.


rule attribution_shard:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
    output:
        "results/{model}/{dataset}/attribution/shard-{shard}-of-{n}.parquet",
    log:
        "logs/attribution_shard/{model}/{dataset}/shard-{shard}-of-{n}.log",
    benchmark:
        "benchmarks/attribution_shard/{model}/{dataset}/shard-{shard}-of-{n}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=get_gpus,
        mem_mb=get_mem_mb,
        runtime=240,
    params:
        model=get_model_params,
    script:
        "../../scripts/attribution_shard.py"


rule merge_attribution:
    input:
        get_attribution_shards,
    output:
        "results/{model}/{dataset}/attribution.parquet",
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
    output:
        curve="results/{model}/{dataset}/cumulative.parquet",
        pairs="results/{model}/{dataset}/cumulative_pairs.npz",
        summary="results/{model}/{dataset}/summary.json",
    log:
        "logs/cumulative_patching/{model}/{dataset}.log",
    benchmark:
        "benchmarks/cumulative_patching/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=get_gpus,
        mem_mb=get_mem_mb,
        runtime=120,
    params:
        model=get_model_params,
        identification=config["identification"],
    script:
        "../../scripts/cumulative_patching.py"
