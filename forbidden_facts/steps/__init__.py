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

import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("forbidden_facts")

# The stage modules, in DAG order: one per file in workflow/rules/.
STAGES = ("model", "prompts", "attribution", "heads", "attack", "figures", "paper")


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


def setup_logging(logfile: str | None) -> None:
    """Send the package's logging to the job's log file and to stderr."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = [logging.StreamHandler(sys.stderr)]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def _terminate(signum, _frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def run(job, fn: Callable) -> None:
    """Run step `fn` for a Snakemake job (or a hand-built one), with logging and clean stops."""
    name = fn.__name__
    setup_logging(job.log[0] if len(job.log) else None)
    # Snakemake stops jobs with SIGTERM; turning it into SystemExit lets every
    # `finally` remove its temporary files instead of leaving them behind.
    signal.signal(signal.SIGTERM, _terminate)
    start = time.perf_counter()
    try:
        fn(job)
    except Exception as exc:
        # One readable paragraph in the log and on the console instead of a bare traceback.
        log.error("%s failed: %s", name, exc)
        log.debug("traceback", exc_info=True)
        raise SystemExit(f"forbidden-facts step {name!r} failed: {exc}") from exc
    log.info("%s finished in %.1f s", name, time.perf_counter() - start)
