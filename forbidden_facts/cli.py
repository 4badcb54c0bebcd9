"""Command line: run one workflow step by hand, or verify an unpacked archive.

    forbidden-facts run-step prompts --input model=resources/models/toy \\
        --input facts=resources/datasets/curated/facts.parquet --input words=data/paper_words.csv \\
        --output prompts=/tmp/prompts.parquet --output summary=/tmp/prompts_summary.json \\
        --wildcard model=toy --wildcard dataset=curated

    forbidden-facts verify results/archive/forbidden-facts-v1/
    forbidden-facts verify results/archive/forbidden-facts-v1.tar.gz
    forbidden-facts verify --sha256 HEX results/archive/forbidden-facts-v1/

    forbidden-facts check-model resources/models/smollm2-135m-instruct --dtype float32
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace


class MissingArgument(AttributeError):
    """A step asked for an input, output, wildcard or param the command line did not give."""


class Files(list):
    """A list of paths whose named entries are also attributes (like Snakemake's)."""

    def __init__(self, pairs: list[tuple[str | None, object]], option: str = "input"):
        self._option = option
        names: dict[str, list] = {}
        for name, value in pairs:
            if name is not None:
                names.setdefault(name, []).append(value)
        super().__init__(value for _, value in pairs)
        for name, values in names.items():
            setattr(
                self,
                name,
                values[0] if len(values) == 1 else Files([(None, v) for v in values], option),
            )

    def __getattr__(self, name: str):
        # Only called for names that were not given: say which option is missing.
        if name.startswith("_"):
            raise AttributeError(name)
        raise MissingArgument(
            f"this step needs `--{self._option} {name}=...`, which was not given "
            "(see the rule's input/output/params in workflow/rules/ for what each step reads)"
        )


class Named(SimpleNamespace):
    """Wildcards or params given on the command line; a missing one is named in the error."""

    def __init__(self, option: str, **values):
        super().__init__(**values)
        object.__setattr__(self, "_option", option)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        raise MissingArgument(f"this step needs `--{self._option} {name}=...`, which was not given")


def _pairs(items: list[str] | None) -> list[tuple[str | None, str]]:
    out = []
    for item in items or []:
        name, sep, value = item.partition("=")
        out.append((name, value) if sep else (None, name))
    return out


def _outputs_over_inputs(inputs: list, outputs: list) -> str | None:
    """A message when an --output would overwrite an --input (or a file inside an input folder)."""
    for out_name, out in outputs:
        target = Path(out).resolve()
        for in_name, src in inputs:
            source = Path(src).resolve()
            if target == source or source in target.parents or target in source.parents:
                return (
                    f"--output {out_name or ''}={out} would overwrite --input "
                    f"{in_name or ''}={src}: a step never writes over what it reads. Give the "
                    "output another path (e.g. under /tmp/)."
                )
    return None


def _run_step(args) -> int:
    from .steps import find_step, run, step_names

    fn = find_step(args.step)
    if fn is None:
        print(f"unknown step {args.step!r}; steps: {', '.join(step_names())}", file=sys.stderr)
        return 2
    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as err:
        print(
            f"--params is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): "
            f"{args.params!r}. Give one JSON object in single quotes, e.g. "
            """--params '{"model": {"dtype": "float32"}}'.""",
            file=sys.stderr,
        )
        return 2
    if not isinstance(params, dict):
        print(f"--params must be a JSON object ({{...}}), got {args.params!r}", file=sys.stderr)
        return 2
    inputs = _pairs(args.input)
    missing = [str(path) for _, path in inputs if not Path(path).exists()]
    if missing:
        print(
            f"--input file(s) not found: {', '.join(missing)}. Build them first with snakemake "
            "(e.g. `snakemake --cores 1 <path>`) or fix the path.",
            file=sys.stderr,
        )
        return 2
    clash = _outputs_over_inputs(inputs, _pairs(args.output))
    if clash:
        print(clash, file=sys.stderr)
        return 2
    job = SimpleNamespace(
        input=Files(inputs, "input"),
        output=Files(_pairs(args.output), "output"),
        params=Named("params", **params),
        wildcards=Named("wildcard", **dict(p for p in _pairs(args.wildcard) if p[0])),
        threads=args.threads,
        log=[args.log] if args.log else [],
    )
    run(job, fn)
    return 0


def _verify(args) -> int:
    from .archive import MANIFEST, manifest_sha256, read_member, read_sidecars, verify

    target = Path(args.directory)
    if not target.exists():
        print(
            f"{target} does not exist: give the archive's .tar.gz (results/archive/"
            "forbidden-facts-<tag>.tar.gz) or the folder it was unpacked into.",
            file=sys.stderr,
        )
        return 2
    expected = args.sha256
    source = "--sha256"
    tarball = None
    if target.is_file():
        tarball, found = read_sidecars(target)
        if expected is None and found is not None:
            expected = found
            manifest_side = target.with_name(target.name + ".manifest.sha256")
            source = manifest_side.name if manifest_side.is_file() else f"{target.name}.sha256"
    for digest, what, where in (
        (expected, "the manifest's sha256 (the archive rule prints it)", source),
        (tarball, "the tarball's sha256", f"{target.name}.sha256"),
    ):
        if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", digest.strip()):
            print(f"{where} must hold the 64 hex digits of {what}, got {digest!r}", file=sys.stderr)
            return 2
    problems = verify(target, expected)
    for line in problems:
        print(line)
    if problems:
        print(
            f"{len(problems)} problem(s): the archive does not match its MANIFEST.tsv"
            + (f" and the sha256 from {source}" if expected else ""),
            file=sys.stderr,
        )
        return 1
    also = f"; the tarball matches {target.name}.sha256" if tarball else ""
    if expected:
        print(f"ok: every file matches MANIFEST.tsv, whose sha256 matches {source}{also}")
    else:
        try:
            digest = manifest_sha256(
                read_member(target, _top(target) + "/" + MANIFEST)
                if target.is_file()
                else _manifest_of(target).read_bytes()
            )
        except (OSError, KeyError):
            digest = "unknown"
        print(
            "ok: every file matches MANIFEST.tsv (sha256 "
            f"{digest}); only a comparison with the sha256 the archive rule printed "
            "(`--sha256`, or <archive>.manifest.sha256 beside the tarball) rules out a "
            f"rewrite{also}"
        )
    return 0


def _top(archive: Path) -> str:
    import tarfile

    with tarfile.open(archive) as tar:
        return tar.getmembers()[0].name.split("/")[0]


def _manifest_of(folder: Path) -> Path:
    from .archive import MANIFEST

    if (folder / MANIFEST).is_file():
        return folder / MANIFEST
    found = sorted(folder.glob(f"*/{MANIFEST}"))
    return found[0] if len(found) == 1 else folder / MANIFEST


def _check_model_inputs(args) -> str | None:
    """Why check-model cannot start (a bad count, a missing folder or unusable weights)."""
    from .preflight import weight_files_problem

    for option, value in (("--n-facts", args.n_facts), ("--components", args.components)):
        if value < 1:
            return f"{option} is {value}: give 1 or more (there would be nothing to check)."
    for option, value in (("--facts", args.facts), ("--words", args.words)):
        if value is not None and Path(value).is_dir():
            return f"{option} {value} is a folder, not a file: name the file inside it."
        if value is not None and not Path(value).exists():
            return f"{option} {value} does not exist: name an existing file."
    folder = Path(args.path)
    if not folder.exists():
        return f"{folder} does not exist: give the path of a model folder (config.json, *.safetensors)."
    if not folder.is_dir():
        return f"{folder} is a file, not a model folder: give the folder that holds it."
    if (folder / "config.json").is_file():
        return weight_files_problem(folder)
    return None


def _check_model(args) -> int:
    from .checks import run_checks
    from .datasets import DatasetError, load_facts, read_words
    from .modeling import ModelLoadError, load_model
    from .prompts import (
        adds_special_tokens,
        assign_irrelevant_words,
        build_prompts,
        prompt_formatter,
    )
    from .provenance import REPO_ROOT

    problem = _check_model_inputs(args)
    if problem:
        print(f"check-model: {problem}", file=sys.stderr)
        return 2
    try:
        facts = load_facts(args.facts or REPO_ROOT / "data/facts/tiny.csv")
        words = read_words(args.words or REPO_ROOT / "data/paper_words.csv")
    except DatasetError as err:
        print(f"check-model: {err}", file=sys.stderr)
        return 2
    try:
        model, tokenizer = load_model(args.path, dtype=args.dtype, device=args.device)
    except ModelLoadError as err:
        print(f"check-model: {err}", file=sys.stderr)
        return 2
    style = args.prompt_style
    if style == "auto":
        style = "chat_prefill" if getattr(tokenizer, "chat_template", None) else "llama2"
    chosen = facts.head(args.n_facts)
    # nc1 words are assigned over the whole file (the paper's rule), then the head is taken.
    nc1 = assign_irrelevant_words(facts, words).loc[chosen.index]
    prompts = build_prompts(
        chosen, nc1, prompt_formatter(style, tokenizer), adds_special_tokens(style)
    )
    print(
        f"check-model {args.path}: model_type {model.config.model_type}, dtype {args.dtype}, "
        f"prompt style {style}, {len(chosen)} facts"
    )
    results = run_checks(model, tokenizer, prompts, n_components=args.components)
    for result in results:
        print(result.line())
    failed = [r.name for r in results if not r.passed]
    if failed:
        print(
            f"{len(failed)} check(s) failed: {', '.join(failed)}. The model's adapter in "
            "forbidden_facts/architectures.py does not match this model's layout; do not "
            "trust its attributions until it does.",
            file=sys.stderr,
        )
        return 1
    print("ok: every check passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="forbidden-facts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-step", help="run one workflow step outside Snakemake")
    run.add_argument("step", help="step name (the rule's name)")
    run.add_argument("--input", action="append", metavar="NAME=PATH")
    run.add_argument("--output", action="append", metavar="NAME=PATH")
    run.add_argument(
        "--params",
        metavar="JSON",
        help='rule params as json, e.g. \'{"model": {"dtype": "float32"}}\'',
    )
    run.add_argument("--wildcard", action="append", metavar="NAME=VALUE")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--log", metavar="PATH")
    run.set_defaults(func=_run_step)
    verify = sub.add_parser(
        "verify",
        help="check an archive (unpacked folder or .tar.gz) against its MANIFEST.tsv; "
        "links and paths that leave the archive fail",
    )
    verify.add_argument("directory", help="unpacked archive folder, or the .tar.gz itself")
    verify.add_argument(
        "--sha256",
        metavar="HEX",
        help="the MANIFEST.tsv sha256 the archive rule printed (default: <archive>.manifest.sha256 "
        "beside a .tar.gz); detects files and manifest rewritten together",
    )
    verify.set_defaults(func=_verify)
    check = sub.add_parser(
        "check-model",
        help="preflight a model folder: components sum, patch-all reproduces, single deltas "
        "equal a brute-force recomputation; exits 1 when a check fails",
    )
    check.add_argument("path", help="a Hugging Face model folder (config.json, safetensors)")
    check.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    check.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    check.add_argument(
        "--prompt-style",
        default="auto",
        choices=["auto", "llama2", "chat_prefill", "chat", "llama2_prefill"],
        help="auto: chat_prefill when the tokenizer has a chat template, else llama2",
    )
    check.add_argument("--facts", help="facts file (default data/facts/tiny.csv)")
    check.add_argument("--words", help="nc1 word list (default data/paper_words.csv)")
    check.add_argument("--n-facts", type=int, default=3, help="facts to check (default 3)")
    check.add_argument(
        "--components", type=int, default=10, help="components to brute-force (default 10)"
    )
    check.set_defaults(func=_check_model)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
