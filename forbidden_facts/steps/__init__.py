"""The workflow's steps: one module per rule file, holding that stage's glue.

``forbidden_facts/steps/<stage>.py`` pairs with ``workflow/rules/<stage>.smk``:
each rule's function reads the job's inputs, calls the library and writes its
outputs. A job is Snakemake's ``snakemake`` object in a rule, or the namespace
that ``forbidden-facts run-step`` builds by hand, so a researcher can debug one
step outside Snakemake. Every rule's script is::

    from forbidden_facts.steps import run
    from forbidden_facts.steps.attack import attack_tokens

    run(snakemake, attack_tokens)
"""

from __future__ import annotations

import errno
import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import safekeep

log = logging.getLogger("forbidden_facts")

# The stage modules, in DAG order: one per file in workflow/rules/.
STAGES = (
    "model",
    "prompts",
    "attribution",
    "shift",
    "heads",
    "attack",
    "faithfulness",
    "card",
    "figures",
    "paper",
)


def find_step(name: str) -> Callable | None:
    """The step function of rule `name`: the stage module that exports it in ``__all__``."""
    for stage in STAGES:
        module = importlib.import_module(f"{__name__}.{stage}")
        if name in module.__all__:
            return getattr(module, name)
    return None


def step_names() -> list[str]:
    """Every rule's step name, in DAG order."""
    return [n for s in STAGES for n in importlib.import_module(f"{__name__}.{s}").__all__]


_HANDLERS: list[logging.Handler] = []


class _Brief(logging.Formatter):
    """The console's format: the message only, never the traceback (that goes to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


def setup_logging(logfile: str | None) -> None:
    """Send the package's logging to the job's log file (with tracebacks) and to stderr (without)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    # A second step in the same process (tests, run-step) must not log into the first's file.
    for handler in _HANDLERS:
        root.removeHandler(handler)
        handler.close()
    _HANDLERS.clear()
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_Brief(fmt))
    _HANDLERS.append(console)
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logfile, mode="w")
        handler.setFormatter(logging.Formatter(fmt))
        _HANDLERS.append(handler)
    for handler in _HANDLERS:
        root.addHandler(handler)


class Stopped(BaseException):
    """The job was stopped by a signal (Snakemake stops jobs with SIGTERM)."""


def _terminate(signum, _frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def _inputs(job) -> list[Path]:
    return [Path(str(p)) for p in getattr(job, "input", [])]


def _corrupt_input(job) -> str | None:
    """Name the first input file that cannot be read at all, and why (None if all read)."""
    from ..io import check_readable

    for path in _inputs(job):
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            problem = check_readable(f)
            if problem:
                return problem
    return None


def explain(exc: BaseException, job) -> str:
    """One paragraph saying what went wrong and what to do about it."""
    if isinstance(exc, PermissionError | OSError) and exc.errno in (errno.EACCES, errno.EROFS):
        where = exc.filename or "an output folder"
        return (
            f"cannot write {where}: {exc.strerror}. Make the output folder writable "
            "(e.g. `chmod -R u+w results`) or run from a directory you can write to; "
            "no earlier output was changed."
        )
    if isinstance(exc, OSError) and exc.errno == errno.EISDIR:
        return (
            f"the output {exc.filename} is a folder, but the rule writes a file there. Move "
            "the folder away (or delete it) and rerun; nothing was computed or changed."
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            f"the disk is full while writing {exc.filename or 'an output'}: free space and rerun."
        )
    corrupt = _corrupt_input(job)
    if corrupt:
        return corrupt
    return f"{type(exc).__name__}: {exc}"


class _Staged:
    """The job as its step sees it: every attribute of `job`, but `output` the staged paths."""

    def __init__(self, job, output):
        self._job = job
        self.output = output

    def __getattr__(self, name: str):
        return getattr(self._job, name)


def run(job, fn: Callable) -> None:
    """Run step `fn` for a Snakemake job (or a hand-built one), with logging and clean stops.

    A failure writes its full traceback to the job's log file and one paragraph
    (the cause and the fix) to the console, then exits non-zero. The step writes
    its outputs to hidden siblings, swapped in only once it has finished, so a
    failed or stopped step leaves every earlier output as it was.
    """
    name = fn.__name__
    logfile = job.log[0] if len(job.log) else None
    setup_logging(logfile)
    # Snakemake stops jobs with SIGTERM; raising from the handler lets every
    # `finally` remove its temporary files instead of leaving them behind.
    previous = signal.signal(signal.SIGTERM, _terminate)
    start = time.perf_counter()
    see = f" (full traceback in {logfile})" if logfile else ""
    # Outputs are written to hidden siblings and swapped in only when all are complete;
    # under Snakemake the earlier outputs' records are noted first (forbidden_facts.safekeep).
    outputs = [str(o) for o in getattr(job, "output", [])]
    pairs = []
    try:
        if getattr(job, "rule", None) is not None:
            safekeep.note(outputs)
        staged, pairs = safekeep.stage(getattr(job, "output", []))
        fn(_Staged(job, staged))
        safekeep.swap_in(pairs)
        safekeep.forget(outputs)
    except (KeyboardInterrupt, Stopped) as exc:
        how = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else f"signal {exc}"
        log.error(
            "%s stopped by %s after %.0f s; its outputs were not written and earlier outputs "
            "are unchanged. Rerun snakemake to resume.",
            name,
            how,
            time.perf_counter() - start,
        )
        raise SystemExit(130) from None
    except Exception as exc:
        log.error("%s failed: %s%s", name, explain(exc, job), see, exc_info=True)
        raise SystemExit(1) from None
    finally:
        safekeep.discard(pairs)
        signal.signal(signal.SIGTERM, previous)
    log.info("%s finished in %.1f s", name, time.perf_counter() - start)
