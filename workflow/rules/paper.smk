# Tables (jinja2), the paper (latexmk) and the archive of a paper revision.
# The tables and values.tex cover every model x dataset of config `run`; the
# paper's figures are those of the first model and first dataset.

PAPER_TABLES = ["kept_facts", "n_star", "top_components", "head_stats", "attack"]
PAPER_FIGURES = [
    "overview",
    "top_components",
    "cumulative",
    "independence",
    "layer_head_heatmap",
    "luigi_waluigi",
    "head_statistics",
    "attention_pattern",
    "attack_vs_control",
    "attack_tokens",
]
# Every artifact of a model x dataset that the archive keeps (beside its figures).
RUN_ARTIFACTS = [
    "prompts.parquet",
    "prompts_summary.json",
    "inference.parquet",
    "inference_summary.json",
    "attribution.parquet",
    "components.parquet",
    "cumulative.parquet",
    "cumulative_pairs.npz",
    "summary.json",
    "heads.parquet",
    "attention_example.npz",
    "attack_self_insertion.parquet",
    "attack_summary.json",
    "attack_tokens.parquet",
]


# The (model, dataset) pairs of config `run`, models outer: the tables' row order,
# and the order of every per-pair input list below.
RUN_PAIRS = [[m, d] for m in config["run"]["models"] for d in config["run"]["datasets"]]
RUN_DIRS = [f"results/{m}/{d}" for m, d in RUN_PAIRS]
MODEL_CARDS = [f"results/{m}/model_card.json" for m in config["run"]["models"]]
# paper/main.tex shows the figures of the first model x dataset.
PAPER_FIGURE_PDFS = [f"{RUN_DIRS[0]}/figures/{name}.pdf" for name in PAPER_FIGURES]
# The archive: every artifact and figure (PNG and PDF) of every pair, and the model cards.
ARCHIVE_FILES = (
    [f"{run}/{name}" for name in RUN_ARTIFACTS for run in RUN_DIRS]
    + [
        f"{run}/figures/{name}.{ext}"
        for name in PAPER_FIGURES
        for ext in ("png", "pdf")
        for run in RUN_DIRS
    ]
    + MODEL_CARDS
)


rule tables:
    input:
        inference=[f"{run}/inference_summary.json" for run in RUN_DIRS],
        summary=[f"{run}/summary.json" for run in RUN_DIRS],
        components=[f"{run}/components.parquet" for run in RUN_DIRS],
        heads=[f"{run}/heads.parquet" for run in RUN_DIRS],
        attack=[f"{run}/attack_summary.json" for run in RUN_DIRS],
        cards=MODEL_CARDS,
        reference=config["paper"]["reference"],
        templates=expand("paper/templates/{name}.tex.j2", name=PAPER_TABLES),
    output:
        kept_facts=report(
            "results/paper/tables/kept_facts.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
        n_star=report(
            "results/paper/tables/n_star.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
        top_components=report(
            "results/paper/tables/top_components.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
        head_stats=report(
            "results/paper/tables/head_stats.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
        attack=report(
            "results/paper/tables/attack.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
        values=report(
            "results/paper/values.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
    log:
        "logs/tables/tables.log",
    conda:
        "../../envs/latex.yaml"
    params:
        pairs=RUN_PAIRS,
        models=config["run"]["models"],
        top_k=config["heads"]["top_k"],
        top_n=config["identification"]["top_n"],
    script:
        "../../scripts/tables.py"


rule paper:
    input:
        main="paper/main.tex",
        values=rules.tables.output.values,
        tables=[rules.tables.output[name] for name in PAPER_TABLES],
        figures=PAPER_FIGURE_PDFS,
    output:
        report(
            "results/paper/main.pdf",
            caption="../report/paper.rst",
            category="6. Paper",
        ),
    log:
        "logs/paper/paper.log",
    conda:
        "../../envs/latex.yaml"
    resources:
        runtime=15,
    params:
        build_dir="results/paper/build",
        timeout=600,
    script:
        "../../scripts/paper.py"


rule archive:
    input:
        artifacts=ARCHIVE_FILES,
        tables=rules.tables.output,
        paper=rules.paper.output[0],
    output:
        "results/archive/forbidden-facts-{tag}.tar.gz",
    log:
        "logs/archive/{tag}.log",
    wildcard_constraints:
        tag=r"[^/]+",
    conda:
        "../../envs/torch.yaml"
    params:
        config=config,
    script:
        "../../scripts/archive.py"
