# Faithfulness (beyond the paper): the top components' c values patched into the nc
# prompts with every later layer recomputed (one token per variant on the nc prompt's
# key/value cache), singly, the top-k together and all but the top-k
# (docs/science.md § Faithfulness).


rule faithfulness:
    input:
        model=get_model_dir,
        prompts=rules.prompts.output.prompts,
        inference=rules.inference.output.table,
        attribution=rules.merge_attribution.output[0],
        components=rules.rank_components.output[0],
        curve=rules.cumulative_patching.output.curve,
        summary=rules.cumulative_patching.output.summary,
        attack=rules.attack_self_insertion.output.table,
        attack_attention=rules.attack_self_insertion.output.attention,
    output:
        effects="results/{model}/{dataset}/total_effects.parquet",
        curve="results/{model}/{dataset}/faithfulness_curve.parquet",
        prediction="results/{model}/{dataset}/attack_prediction.parquet",
        summary="results/{model}/{dataset}/faithfulness.json",
    log:
        "logs/faithfulness/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/faithfulness/{model}/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=120,
    params:
        model=get_model_params,
        faithfulness=get_faithfulness_params(),
        # The attack's top suppressor heads: the predictor of when the attack works.
        attack_heads=config["attack"]["top_k_heads"],
    script:
        "../../scripts/faithfulness.py"


rule figure_faithfulness:
    input:
        curve=rules.faithfulness.output.curve,
        summary=rules.faithfulness.output.summary,
        prediction=rules.faithfulness.output.prediction,
    output:
        png=report(
            "results/{model}/{dataset}/figures/circuit_curves.png",
            caption="../report/circuit_curves.rst",
            category="7. Faithfulness",
            subcategory="{model} / {dataset}",
        ),
        attack=report(
            "results/{model}/{dataset}/figures/attack_prediction.png",
            caption="../report/attack_prediction.rst",
            category="7. Faithfulness",
            subcategory="{model} / {dataset}",
        ),
        pdf="results/{model}/{dataset}/figures/circuit_curves.pdf",
        attack_pdf="results/{model}/{dataset}/figures/attack_prediction.pdf",
    log:
        "logs/figure_faithfulness/{model}/{dataset}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/figure_faithfulness.py"


# The paper's section "How faithful is the description?": every (model, dataset) of
# config `run`, the first pair's figures.
rule table_faithfulness:
    input:
        summaries=per_run(rules.faithfulness.output.summary),
        template="paper/templates/faithfulness.tex.j2",
    output:
        report(
            "results/paper/tables/faithfulness.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
    log:
        "logs/table_faithfulness/table_faithfulness.log",
    conda:
        "../../envs/latex.yaml"
    params:
        models=RUN_MODELS,
        datasets=RUN_DATASETS,
    script:
        "../../scripts/table_faithfulness.py"
