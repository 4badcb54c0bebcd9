# Head analysis: OV suppression scores and attention to the forbidden word.


rule heads:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
        components=rules.rank_components.output[0],
    output:
        table="results/{model}/{dataset}/heads.parquet",
        example="results/{model}/{dataset}/attention_example.npz",
    log:
        "logs/heads/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/heads/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=120,
    params:
        model=get_heads_model_params,
        heads=get_heads_params(),
    script:
        "../../scripts/heads.py"
