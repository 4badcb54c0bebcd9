"""Glue of workflow/rules/paper.smk: render the tables, compile the paper, archive everything."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from .. import io

__all__ = ["tables", "paper", "archive"]

log = logging.getLogger("forbidden_facts")

# The figures `paper/main.tex` includes (from the first model x dataset of
# config `run`), with the rule that produces each; paper.smk passes these.
PAPER_FIGURES = {
    "overview": "figure_overview",
    "top_components": "figures_attribution",
    "cumulative": "figures_attribution",
    "independence": "figures_attribution",
    "layer_head_heatmap": "figures_attribution",
    "luigi_waluigi": "figures_attribution",
    "head_statistics": "figures_heads",
    "attention_pattern": "figures_heads",
    "attack_vs_control": "figures_attack",
    "attack_tokens": "figures_attack",
}

LATEX_INSTALL_HINT = (
    "latexmk is not on PATH, so results/paper/main.pdf cannot be compiled. Install a TeX "
    "distribution: `sudo apt-get install latexmk texlive-latex-base texlive-latex-recommended "
    "texlive-fonts-recommended` (Debian/Ubuntu), or run Snakemake with `--sdm conda` "
    "(envs/latex.yaml). Only the paper and the archive need it; the rest of the DAG is "
    "unaffected (the default profile keeps going)."
)


def _files(value) -> list[str]:
    """A named input as a list of paths (one path or a list of them)."""
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]


def _param(job, name, default=None):
    params = job.params
    if isinstance(params, dict):
        return params.get(name, default)
    return getattr(params, name, default)


# ---------------------------------------------------------------------------
# tables


def tables(job) -> None:
    """Render every table of `tables.TABLES` and values.tex from all runs' artifacts.

    Inputs (lists, one entry per (model, dataset) of `params.pairs`, in that
    order): ``inference``, ``summary``, ``components``, ``heads``, ``attack``;
    ``cards`` (one per model of `params.models`), ``reference`` (the paper's
    numbers) and ``templates``. Outputs: one per table name, plus ``values``.
    """
    from .. import tables as T

    pairs = [tuple(p) for p in _param(job, "pairs")]
    per_run = {role: _files(getattr(job.input, role)) for role in T.RUN_FILES}
    for role, paths in per_run.items():
        if len(paths) != len(pairs):
            raise ValueError(
                f"input {role}: {len(paths)} files for {len(pairs)} (model, dataset) pairs"
            )
    models = list(_param(job, "models") or [])
    cards = dict(zip(models, _files(getattr(job.input, "cards", None)), strict=False))
    runs = []
    for i, (model, dataset) in enumerate(pairs):
        run = T.load_run(
            model,
            dataset,
            card=cards.get(model),
            **{role: paths[i] for role, paths in per_run.items()},
        )
        runs.append(run)
    reference = T.load_reference(job.input.reference)
    template_dir = Path(_files(job.input.templates)[0]).parent
    top_k = int(_param(job, "top_k", 10))
    rendered = T.render_tables(
        runs, reference, template_dir, top_k=top_k, top_n=int(_param(job, "top_n", 40))
    )
    for name, text in rendered.items():
        with io.atomic_path(getattr(job.output, name)) as tmp:
            tmp.write_text(text)
    with io.atomic_path(job.output.values) as tmp:
        tmp.write_text(T.values_tex(runs, reference, top_k=top_k))
    log.info("rendered %d tables and values.tex for %d run(s)", len(rendered), len(runs))


# ---------------------------------------------------------------------------
# paper


def latex_command(main: str = "main.tex") -> list[str]:
    """The command that compiles `main`: latexmk (pdflatex), else tectonic; or fail clearly."""
    if shutil.which("latexmk"):
        return [
            "latexmk",
            "-pdf",
            "-interaction=nonstopmode",
            "-halt-on-error",
            "-file-line-error",
            main,
        ]
    if shutil.which("tectonic"):
        # envs/latex.yaml ships tectonic (conda-forge has no TeX Live with latexmk).
        return ["tectonic", "--keep-logs", main]
    raise RuntimeError(LATEX_INSTALL_HINT)


def _log_excerpt(log_path: Path, lines: int = 20) -> str:
    """The first TeX error of a .log file and the lines after it."""
    if not log_path.exists():
        return "(no main.log was written)"
    text = log_path.read_text(errors="replace").splitlines()
    start = next(
        (i for i, line in enumerate(text) if line.startswith("!") or re.match(r".*:\d+: ", line)),
        max(0, len(text) - lines),
    )
    return "\n".join(text[start : start + lines])


def stage_paper(build: Path, main: str, values: str, tables: list[str], figures: list[str]) -> None:
    """Lay out the paper's sources in `build`: main.tex, values.tex, tables/, figures/.

    `paper/main.tex` refers to ``values.tex``, ``tables/<name>.tex`` and
    ``figures/<name>.pdf``; this is the only place that maps those names to the
    workflow's files.
    """
    if build.exists():
        shutil.rmtree(build)
    (build / "tables").mkdir(parents=True)
    (build / "figures").mkdir()
    shutil.copyfile(main, build / "main.tex")
    shutil.copyfile(values, build / "values.tex")
    for path in tables:
        shutil.copyfile(path, build / "tables" / Path(path).name)
    for path in figures:
        shutil.copyfile(path, build / "figures" / Path(path).name)


def compile_paper(build: Path, timeout: float = 300) -> Path:
    """Compile ``build/main.tex``; return the PDF. Raises with the TeX error on failure."""
    cmd = latex_command()
    log.info("compiling %s/main.tex: %s", build, " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            cwd=build,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"{cmd[0]} did not finish within {timeout:.0f} s; see {build}/main.log"
        ) from exc
    for line in (proc.stdout + proc.stderr).splitlines()[-40:]:
        log.debug("%s", line)
    pdf = build / "main.pdf"
    if proc.returncode != 0 or not pdf.exists():
        raise RuntimeError(
            f"{cmd[0]} failed (exit {proc.returncode}); first error in {build}/main.log:\n"
            + _log_excerpt(build / "main.log")
        )
    return pdf


def paper(job) -> None:
    """Compile paper/main.tex against the rendered tables, values.tex and figures.

    Inputs: ``main`` (paper/main.tex), ``values``, ``tables`` and ``figures``
    (PDFs). The sources are staged in `params.build_dir` (default
    ``<output dir>/build``), compiled there, and the PDF is moved into place.
    """
    out = Path(job.output[0])
    command = latex_command()  # fail before touching anything when TeX is missing
    log.info("using %s", shutil.which(command[0]))
    build = Path(_param(job, "build_dir") or out.parent / "build")
    stage_paper(
        build, job.input.main, job.input.values, _files(job.input.tables), _files(job.input.figures)
    )
    pdf = compile_paper(build, timeout=float(_param(job, "timeout", 300)))
    with io.atomic_path(out) as tmp:
        shutil.copyfile(pdf, tmp)
    log.info("wrote %s (%d bytes)", out, out.stat().st_size)


# ---------------------------------------------------------------------------
# archive


def archive(job) -> None:
    """Pack every input file, a MANIFEST.tsv and provenance.json into the output .tar.gz."""
    from ..archive import build_archive

    files = []
    for value in job.input:
        files.extend(_files(value))
    files = list(dict.fromkeys(files))
    tag = job.wildcards.tag
    config = _param(job, "config") or {}
    build_archive(files, job.output[0], tag, config, extra_provenance={"rule": "archive"})
    log.info("archived %d files into %s", len(files), job.output[0])
