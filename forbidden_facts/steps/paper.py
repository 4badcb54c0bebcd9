"""Glue of workflow/rules/paper.smk: render the tables, compile the paper, archive everything."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from .. import io

__all__ = ["tables", "paper_sources", "paper", "archive"]

log = logging.getLogger("forbidden_facts")

LATEX_INSTALL_HINT = (
    "latexmk is not on PATH, so results/paper/main.pdf cannot be compiled. Install a TeX "
    "distribution: `sudo apt-get install latexmk texlive-latex-base texlive-latex-recommended "
    "texlive-fonts-recommended` (Debian/Ubuntu), or run Snakemake with `--sdm conda` "
    "(envs/latex.yaml). Only the PDF needs it: without TeX `snakemake` leaves it out of its "
    "targets and builds everything else and the archive."
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


# The per-run named inputs of rule `tables`: the artifacts `tables.load_run` reads.
RUN_INPUTS = ("inference", "summary", "components", "heads", "attack")


def tables(job) -> None:
    """Render every table template and values.tex from all runs' artifacts.

    Inputs: one list per name of `RUN_INPUTS`, one entry per (model, dataset) of
    ``params.models``/``params.datasets`` (in that order); ``cards`` (one per model,
    first-seen order), ``reference`` (the paper's numbers) and ``templates``
    (``<name>.tex.j2``). Outputs: one per template, of the same name, plus ``values``.
    """
    from .. import tables as T
    from .. import tables_latex as L

    pairs = list(zip(_param(job, "models"), _param(job, "datasets"), strict=True))
    per_run = {role: _files(getattr(job.input, role)) for role in RUN_INPUTS}
    for role, paths in per_run.items():
        if len(paths) != len(pairs):
            raise ValueError(
                f"rule tables: input {role} has {len(paths)} files for {len(pairs)} "
                "(model, dataset) pairs; check workflow/rules/paper.smk"
            )
    models = list(dict.fromkeys(m for m, _ in pairs))
    cards = dict(zip(models, _files(getattr(job.input, "cards", None)), strict=False))
    runs = [
        T.load_run(
            model,
            dataset,
            card=cards.get(model),
            **{role: paths[i] for role, paths in per_run.items()},
        )
        for i, (model, dataset) in enumerate(pairs)
    ]
    reference = T.load_reference(job.input.reference)
    context = T.paper_context(
        runs, reference, top_k=int(_param(job, "top_k")), top_n=int(_param(job, "top_n"))
    )
    rendered = {}
    for template in _files(job.input.templates):
        name = Path(template).name.removesuffix(".tex.j2")
        target = getattr(job.output, name, None)
        if target is None:
            raise ValueError(
                f"rule tables: template {template} has no output named {name!r}; "
                "add it to the rule's outputs in workflow/rules/paper.smk"
            )
        rendered[target] = L.render(template, context)
    rendered[job.output.values] = L.values_tex(context)
    for target, text in rendered.items():
        with io.atomic_path(target) as tmp:
            tmp.write_text(text)
    log.info("rendered %d files for %d run(s)", len(rendered), len(runs))


# ---------------------------------------------------------------------------
# paper


def tex_program() -> str | None:
    """The TeX program on PATH that compiles the paper: latexmk, else tectonic, else None.

    The one TeX detection: `latex_command` uses it, and so does workflow/rules/common.smk
    to leave the PDF out of the targets when there is none.
    """
    return next((p for p in ("latexmk", "tectonic") if shutil.which(p)), None)


def latex_command(main: str = "main.tex") -> list[str]:
    """The command that compiles `main`: latexmk (pdflatex), else tectonic; or fail clearly."""
    program = tex_program()
    if program == "latexmk":
        return [
            "latexmk",
            "-pdf",
            "-interaction=nonstopmode",
            "-halt-on-error",
            "-file-line-error",
            main,
        ]
    if program == "tectonic":
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


def stage_paper(
    build: Path, main: str, values: str, findings: str, tables: list[str], figures: list[str]
) -> None:
    """Lay out the paper's sources in `build`: main.tex, values.tex, findings.tex, tables/, figures/.

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
    shutil.copyfile(findings, build / "findings.tex")
    for path in tables:
        shutil.copyfile(path, build / "tables" / Path(path).name)
    for path in figures:
        shutil.copyfile(path, build / "figures" / Path(path).name)
    missing = missing_sources(build)
    if missing:
        raise FileNotFoundError(
            f"paper/main.tex refers to {', '.join(missing)}, which no input of rule paper "
            "provides; add the producing rule's output to PAPER_TABLES or PAPER_FIGURES in "
            "workflow/rules/paper.smk"
        )


def missing_sources(build: Path) -> list[str]:
    """Files that ``build/main.tex`` inputs or includes but `build` lacks."""
    text = re.sub(r"(?<!\\)%.*", "", (build / "main.tex").read_text())
    refs = re.findall(r"\\(?:input|includegraphics)(?:\[[^\]]*\])?\{([^}]+)\}", text)
    return [ref for ref in refs if not (build / ref).exists()]


def compile_paper(build: Path, timeout: float) -> Path:
    """Compile ``build/main.tex`` within `timeout` seconds; return the PDF.

    Raises with the TeX error on failure. The timeout is rule `paper`'s ``params.timeout``
    (workflow/rules/paper.smk), its one place.
    """
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


def paper_sources(job) -> None:
    """Stage the paper's rendered LaTeX sources in the output folder, without compiling.

    Inputs: ``main`` (paper/main.tex), ``values``, ``findings``, ``tables`` and
    ``figures`` (PDFs). Fails, naming the file, when main.tex refers to a table or
    figure that no input provides. The folder is what the archive keeps and what rule
    `paper` compiles; it needs no TeX.
    """
    out = Path(job.output[0])
    with io.replacing_dir(out) as tmp:
        stage_paper(
            tmp,
            job.input.main,
            job.input.values,
            job.input.findings,
            _files(job.input.tables),
            _files(job.input.figures),
        )
    log.info("staged the paper's sources in %s", out)


def paper(job) -> None:
    """Compile the staged sources (rule `paper_sources`) into the PDF.

    Inputs: ``sources`` (the folder). The sources are copied to `params.build_dir`
    (default ``<output dir>/build``), compiled there, and the PDF is moved into place.
    """
    out = Path(job.output[0])
    command = latex_command()  # fail before touching anything when TeX is missing
    log.info("using %s", shutil.which(command[0]))
    build = Path(_param(job, "build_dir") or out.parent / "build")
    if build.exists():
        shutil.rmtree(build)
    shutil.copytree(job.input.sources, build)
    timeout = _param(job, "timeout")
    if timeout is None:
        raise ValueError(
            "rule paper needs params.timeout (seconds for TeX), as workflow/rules/paper.smk "
            "sets it; by hand: forbidden-facts run-step paper --params '{\"timeout\": 600}'"
        )
    pdf = compile_paper(build, timeout=float(timeout))
    with io.atomic_path(out) as tmp:
        shutil.copyfile(pdf, tmp)
    log.info("wrote %s (%d bytes)", out, out.stat().st_size)


# ---------------------------------------------------------------------------
# archive


def archive(job) -> None:
    """Pack every input file, a MANIFEST.tsv and provenance.json into the output .tar.gz.

    The manifest's sha256 goes to the log, the console and output ``manifest_sha256``
    (``<archive>.manifest.sha256``), so that `forbidden-facts verify` can detect a
    rewrite; output ``sha256`` (``<archive>.sha256``) holds the tarball's, for
    ``sha256sum -c``.
    """
    from ..archive import build_archive_with_sidecar

    files = []
    for value in job.input:
        files.extend(_files(value))
    files = list(dict.fromkeys(files))
    tag = job.wildcards.tag
    config = _param(job, "config") or {}
    digest = build_archive_with_sidecar(
        files,
        job.output[0],
        tag,
        config,
        sidecar=getattr(job.output, "sha256", None),
        extra_provenance={"rule": "archive"},
        manifest_sidecar=getattr(job.output, "manifest_sha256", None),
    )
    log.info(
        "archived %d files; the sha256 of its MANIFEST.tsv is %s (kept in <archive>.manifest.sha256; "
        "`forbidden-facts verify --sha256 %s <archive>` proves the archive unchanged)",
        len(files),
        digest,
        digest,
    )
