# Figures: one rule per figure family; every figure is PNG + PDF and registered
# for `snakemake --report` with a caption from workflow/report/.


rule figure_overview:
    input:
        inference=rules.inference.output.table,
    output:
        png=report(
            "results/{model}/{dataset}/figures/overview.png",
            caption="../report/overview.rst",
            category="1. Forbidding the answer",
            subcategory="{model} / {dataset}",
        ),
        pdf="results/{model}/{dataset}/figures/overview.pdf",
    log:
        "logs/figure_overview/{model}/{dataset}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/figure_overview.py"


rule figures_attribution:
    input:
        components=rules.rank_components.output[0],
        curve=rules.cumulative_patching.output.curve,
        summary=rules.cumulative_patching.output.summary,
    output:
        top=report(
            "results/{model}/{dataset}/figures/top_components.png",
            caption="../report/top_components.rst",
            category="2. Suppressive components",
            subcategory="{model} / {dataset}",
        ),
        cumulative=report(
            "results/{model}/{dataset}/figures/cumulative.png",
            caption="../report/cumulative.rst",
            category="2. Suppressive components",
            subcategory="{model} / {dataset}",
        ),
        independence=report(
            "results/{model}/{dataset}/figures/independence.png",
            caption="../report/independence.rst",
            category="2. Suppressive components",
            subcategory="{model} / {dataset}",
        ),
        heatmap=report(
            "results/{model}/{dataset}/figures/layer_head_heatmap.png",
            caption="../report/layer_head_heatmap.rst",
            category="2. Suppressive components",
            subcategory="{model} / {dataset}",
        ),
        waluigi=report(
            "results/{model}/{dataset}/figures/luigi_waluigi.png",
            caption="../report/luigi_waluigi.rst",
            category="2. Suppressive components",
            subcategory="{model} / {dataset}",
        ),
        top_pdf="results/{model}/{dataset}/figures/top_components.pdf",
        cumulative_pdf="results/{model}/{dataset}/figures/cumulative.pdf",
        independence_pdf="results/{model}/{dataset}/figures/independence.pdf",
        heatmap_pdf="results/{model}/{dataset}/figures/layer_head_heatmap.pdf",
        waluigi_pdf="results/{model}/{dataset}/figures/luigi_waluigi.pdf",
    log:
        "logs/figures_attribution/{model}/{dataset}.log",
    conda:
        "../../envs/plot.yaml"
    params:
        top_n=config["identification"]["top_n"],
    script:
        "../../scripts/figures_attribution.py"


rule figures_heads:
    input:
        heads=rules.heads.output.table,
        example=rules.heads.output.example,
        summary=rules.cumulative_patching.output.summary,
    output:
        stats=report(
            "results/{model}/{dataset}/figures/head_statistics.png",
            caption="../report/head_statistics.rst",
            category="3. Heads",
            subcategory="{model} / {dataset}",
        ),
        pattern=report(
            "results/{model}/{dataset}/figures/attention_pattern.png",
            caption="../report/attention_pattern.rst",
            category="3. Heads",
            subcategory="{model} / {dataset}",
        ),
        stats_pdf="results/{model}/{dataset}/figures/head_statistics.pdf",
        pattern_pdf="results/{model}/{dataset}/figures/attention_pattern.pdf",
    log:
        "logs/figures_heads/{model}/{dataset}.log",
    conda:
        "../../envs/plot.yaml"
    params:
        top_k=config["heads"]["top_k"],
    script:
        "../../scripts/figures_heads.py"


rule figures_attack:
    input:
        attack=rules.attack_self_insertion.output.table,
        tokens=rules.attack_tokens.output[0],
    output:
        versus=report(
            "results/{model}/{dataset}/figures/attack_vs_control.png",
            caption="../report/attack_vs_control.rst",
            category="4. Attacks",
            subcategory="{model} / {dataset}",
        ),
        tokens=report(
            "results/{model}/{dataset}/figures/attack_tokens.png",
            caption="../report/attack_tokens.rst",
            category="4. Attacks",
            subcategory="{model} / {dataset}",
        ),
        versus_pdf="results/{model}/{dataset}/figures/attack_vs_control.pdf",
        tokens_pdf="results/{model}/{dataset}/figures/attack_tokens.pdf",
    log:
        "logs/figures_attack/{model}/{dataset}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../../scripts/figures_attack.py"


rule figure_component_shift:
    input:
        shift=rules.component_shift.output.table,
    output:
        png=report(
            "results/{model}/{dataset}/figures/component_shift.png",
            caption="../report/component_shift.rst",
            category="2. Suppressive components",
            subcategory="{model} / {dataset}",
        ),
        pdf="results/{model}/{dataset}/figures/component_shift.pdf",
    log:
        "logs/figure_component_shift/{model}/{dataset}.log",
    wildcard_constraints:
        model=_alternation(SHIFT_MODELS),
    conda:
        "../../envs/plot.yaml"
    params:
        base=get_base_name,
    script:
        "../../scripts/figure_component_shift.py"
