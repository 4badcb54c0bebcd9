# What a fine-tune did to each component: a model whose config block names
# `base: B` is compared with B on the same facts. B is run (inference and
# first-order patching, sharded like attribution.smk) on exactly this model's kept
# facts and prompts (first-order patching needs no kept filter, so B is measured
# where it may not obey), and component_shift gives per component the effect
# before (B) and after (this model), the change and whether its role changed.


rule base_inference:
    input:
        model=get_base_model_dir,
        base_weights=get_base_weights_record,
        derived=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
    output:
        "results/{model}/{dataset}/base_inference.parquet",
    log:
        "logs/base_inference/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/base_inference/{model}/{dataset}.tsv"
    wildcard_constraints:
        model=_alternation(SHIFT_MODELS),
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=60,
    params:
        base=get_base_name,
        model=get_base_model_params,
    script:
        "../../scripts/base_inference.py"


rule base_attribution_shard:
    input:
        model=get_base_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
        base_inference=rules.base_inference.output[0],
    output:
        "results/{model}/{dataset}/base_attribution/shard-{scatteritem}.parquet",
    log:
        "logs/base_attribution_shard/{model}/{dataset}/shard-{scatteritem}.log",
    benchmark:
        "logs/benchmarks/base_attribution_shard/{model}/{dataset}/shard-{scatteritem}.tsv"
    wildcard_constraints:
        model=_alternation(SHIFT_MODELS),
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=240,
    params:
        base=get_base_name,
        model=get_base_model_params,
    script:
        "../../scripts/base_attribution_shard.py"


rule merge_base_attribution:
    input:
        get_base_attribution_shards,
    output:
        update("results/{model}/{dataset}/base_attribution.parquet"),
    log:
        "logs/merge_base_attribution/{model}/{dataset}.log",
    wildcard_constraints:
        model=_alternation(SHIFT_MODELS),
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/merge_base_attribution.py"


rule component_shift:
    input:
        base_attribution=rules.merge_base_attribution.output[0],
        attribution=rules.merge_attribution.output[0],
        inference=rules.inference.output.table,
        base_inference=rules.base_inference.output[0],
    output:
        table="results/{model}/{dataset}/component_shift.parquet",
        summary="results/{model}/{dataset}/component_shift.json",
    log:
        "logs/component_shift/{model}/{dataset}.log",
    wildcard_constraints:
        model=_alternation(SHIFT_MODELS),
    conda:
        "../../envs/torch.yaml"
    params:
        base=get_base_name,
        base_dtype=get_base_dtype,
        model=get_model_params,
    script:
        "../../scripts/component_shift.py"
