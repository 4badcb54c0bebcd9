# Datasets, prompts and inference: the three prompts per fact, the model's
# probability of the correct answer, the kept facts and the total effect.


rule download_dataset:
    output:
        data="resources/datasets/{dataset}/source",
        record="resources/datasets/{dataset}/download.json",
    log:
        "logs/download_dataset/{dataset}.log",
    wildcard_constraints:
        dataset=_alternation(URL_DATASETS),
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=30,
    params:
        dataset=get_dataset_params,
    script:
        "../../scripts/download_dataset.py"


rule prepare_dataset:
    input:
        source=get_dataset_source,
    output:
        facts="resources/datasets/{dataset}/facts.parquet",
        report="resources/datasets/{dataset}/facts_report.json",
    log:
        "logs/prepare_dataset/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        dataset=get_dataset_params,
    script:
        "../../scripts/prepare_dataset.py"


rule prompts:
    input:
        model=get_model_dir,
        # A local model's weight record: weights replaced in place rerun the analyses.
        weights=get_model_weights_record,
        facts=rules.prepare_dataset.output.facts,
        words=config["irrelevant_words"],
    output:
        prompts="results/{model}/{dataset}/prompts.parquet",
        summary="results/{model}/{dataset}/prompts_summary.json",
    log:
        "logs/prompts/{model}/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        prompt_style=get_prompt_style,
        max_facts=get_model_max_facts,
        finetune_chain=get_finetune_chain,
    script:
        "../../scripts/prompts.py"


rule inference:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
    output:
        table="results/{model}/{dataset}/inference.parquet",
        summary="results/{model}/{dataset}/inference_summary.json",
    log:
        "logs/inference/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/inference/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=120,
    params:
        model=get_model_params,
    script:
        "../../scripts/inference.py"
