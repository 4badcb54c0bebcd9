# Tables (jinja2), the paper (latexmk) and the archive of a paper revision.
# Every list of artifacts is defined here once, from the rules' own outputs, and
# reaches the scripts as named inputs. The tables and values.tex cover every
# model x dataset of config `run`; the paper's figures are those of the first pair.
import sys

# The paper's tables, in the order paper/main.tex shows them; each is rendered from
# paper/templates/<name>.tex.j2 to results/paper/tables/<name>.tex.
PAPER_TABLES = [
    "comparison",
    "kept_facts",
    "n_star",
    "top_components",
    "head_stats",
    "attack",
]
# The figures paper/main.tex includes (as figures/<file name>).
PAPER_FIGURES = [
    rules.figure_overview.output.pdf,
    rules.figures_attribution.output.top_pdf,
    rules.figures_attribution.output.cumulative_pdf,
    rules.figures_attribution.output.independence_pdf,
    rules.figures_attribution.output.heatmap_pdf,
    rules.figures_attribution.output.waluigi_pdf,
    rules.figures_heads.output.stats_pdf,
    rules.figures_heads.output.pattern_pdf,
    rules.figures_attack.output.versus_pdf,
    rules.figures_attack.output.tokens_pdf,
]
# Every artifact and figure of a model x dataset that the archive keeps.
RUN_ARTIFACTS = [
    *rules.prompts.output,
    *rules.inference.output,
    *rules.merge_attribution.output,
    *rules.rank_components.output,
    *rules.cumulative_patching.output,
    *rules.heads.output,
    *rules.attack_self_insertion.output,
    *rules.attack_tokens.output,
    *rules.figure_overview.output,
    *rules.figures_attribution.output,
    *rules.figures_heads.output,
    *rules.figures_attack.output,
    *rules.faithfulness.output,
    *rules.figure_faithfulness.output,
]


onstart:
    if config["run"]["paper"] and not BUILD_PDF:
        print(PDF_SKIPPED, file=sys.stderr)


onsuccess:
    if config["run"]["paper"] and not BUILD_PDF:
        print(PDF_SKIPPED, file=sys.stderr)


rule tables:
    input:
        inference=per_run(rules.inference.output.summary),
        summary=per_run(rules.cumulative_patching.output.summary),
        components=per_run(rules.rank_components.output[0]),
        heads=per_run(rules.heads.output.table),
        attack=per_run(rules.attack_self_insertion.output.summary),
        cards=expand(
            _as_written(rules.model_card.output[0]), model=config["run"]["models"]
        ),
        reference=config["paper"]["reference"],
        templates=expand(
            "paper/templates/{name}.tex.j2", name=[*PAPER_TABLES, "findings"]
        ),
    output:
        **{
            name: report(
                f"results/paper/tables/{name}.tex",
                caption="../report/tables.rst",
                category="5. Tables",
            )
            for name in PAPER_TABLES
        },
        findings="results/paper/findings.tex",
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
        models=RUN_MODELS,
        datasets=RUN_DATASETS,
        top_k=config["heads"]["top_k"],
        top_n=config["identification"]["top_n"],
    script:
        "../../scripts/tables.py"


# The before/after comparison of every derived model of config `run` (shift.smk): a
# section of the paper, empty (a LaTeX comment) when no model names a `base`.
rule table_component_shift:
    input:
        tables=per_shift_run(rules.component_shift.output.table),
        summaries=per_shift_run(rules.component_shift.output.summary),
        template="paper/templates/component_shift.tex.j2",
    output:
        report(
            "results/paper/tables/component_shift.tex",
            caption="../report/tables.rst",
            category="5. Tables",
        ),
    log:
        "logs/table_component_shift/table_component_shift.log",
    conda:
        "../../envs/latex.yaml"
    params:
        models=SHIFT_RUN_MODELS,
        datasets=SHIFT_RUN_DATASETS,
        bases={m: config["models"][m]["base"] for m in SHIFT_MODELS},
    script:
        "../../scripts/table_component_shift.py"


rule paper_sources:
    input:
        main="paper/main.tex",
        values=rules.tables.output.values,
        findings=rules.tables.output.findings,
        tables=[
            *[rules.tables.output[name] for name in PAPER_TABLES],
            rules.table_component_shift.output[0],
            rules.table_faithfulness.output[0],
        ],
        # The comparison's figure: that of the first derived model of config `run`.
        figures=[
            *first_run(PAPER_FIGURES),
            *per_shift_run(rules.figure_component_shift.output.pdf, first=True),
            *first_run(
                [
                    rules.figure_faithfulness.output.pdf,
                    rules.figure_faithfulness.output.attack_pdf,
                ]
            ),
        ],
    output:
        directory("results/paper/source"),
    log:
        "logs/paper_sources/paper_sources.log",
    conda:
        "../../envs/latex.yaml"
    script:
        "../../scripts/paper_sources.py"


rule paper:
    input:
        sources=rules.paper_sources.output[0],
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
        artifacts=per_run(RUN_ARTIFACTS),
        cards=rules.tables.input.cards,
        tables=rules.tables.output,
        shift=[
            *per_shift_run(rules.base_inference.output),
            *per_shift_run(rules.merge_base_attribution.output),
            *per_shift_run(rules.component_shift.output),
            *per_shift_run(rules.figure_component_shift.output),
            rules.table_component_shift.output[0],
            rules.table_faithfulness.output[0],
        ],
        sources=rules.paper_sources.output[0],
        paper=rules.paper.output if BUILD_PDF else [],
    output:
        "results/archive/forbidden-facts-{tag}.tar.gz",
        # The tarball's sha256, as sha256sum writes it (`sha256sum -c` checks it).
        sha256="results/archive/forbidden-facts-{tag}.tar.gz.sha256",
        # The sha256 of the archive's MANIFEST.tsv (`forbidden-facts verify` reads it).
        manifest_sha256="results/archive/forbidden-facts-{tag}.tar.gz.manifest.sha256",
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
