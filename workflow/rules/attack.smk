# Attack search: the self-insertion ("California") attack against a control, and
# an exhaustive search over the vocabulary for the top suppressor heads.


rule attack_self_insertion:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
        words=config["irrelevant_words"],
    output:
        table="results/{model}/{dataset}/attack_self_insertion.parquet",
        summary="results/{model}/{dataset}/attack_summary.json",
        # Every head's attention onto the inserted word (the faithfulness stage's predictor).
        attention="results/{model}/{dataset}/attack_attention.parquet",
    log:
        "logs/attack_self_insertion/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/attack_self_insertion/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=60,
    params:
        model=get_model_params,
        attack=get_attack_params(),
    script:
        "../../scripts/attack_self_insertion.py"


rule attack_tokens:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
        heads=rules.heads.output.table,
    output:
        "results/{model}/{dataset}/attack_tokens.parquet",
    log:
        "logs/attack_tokens/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/attack_tokens/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=240,
    params:
        model=get_token_search_model_params,
        attack=get_attack_params(),
    script:
        "../../scripts/attack_tokens.py"
