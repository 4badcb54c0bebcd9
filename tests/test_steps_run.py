"""A failing or stopped step: traceback in its log file, one paragraph on the console,
no temporary file left behind, earlier outputs untouched."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from forbidden_facts import io
from forbidden_facts.steps import explain, run


def _job(tmp_path: Path, inputs=()) -> SimpleNamespace:
    return SimpleNamespace(
        input=list(inputs), output=[], log=[str(tmp_path / "logs/step.log")], params=None
    )


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_a_failing_step_logs_its_traceback_and_prints_one_paragraph(tmp_path, capsys):
    def broken_step(job):
        raise ValueError("the cause, in words")

    with pytest.raises(SystemExit) as stop:
        run(_job(tmp_path), broken_step)
    assert stop.value.code == 1
    console = capsys.readouterr().err
    assert "broken_step failed: ValueError: the cause, in words" in console
    assert "Traceback" not in console and "logs/step.log" in console
    text = (tmp_path / "logs/step.log").read_text()
    assert "Traceback (most recent call last)" in text and 'raise ValueError("the cause' in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_step_says_so_and_leaves_no_temporary_file(tmp_path, capsys, sig):
    out = tmp_path / "results/table.parquet"
    io.write_parquet(out, pd.DataFrame({"a": [1]}))
    good = out.read_bytes()

    def long_step(job):
        with io.atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), sig)  # Ctrl-C, or Snakemake stopping the job
            time.sleep(5)

    # Ctrl-C raises KeyboardInterrupt only under Python's default SIGINT handler; a
    # shell that starts pytest in the background (`cmd &`) makes it ignore SIGINT.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as stop:
            run(_job(tmp_path), long_step)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stop.value.code == 130
    console = capsys.readouterr().err
    assert "long_step stopped by" in console and "Rerun snakemake to resume" in console
    assert "Traceback" not in console
    assert out.read_bytes() == good and _temps(out.parent) == []


def test_a_temporary_file_of_a_killed_job_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "summary.json"
    code = (
        "import os, signal\n"
        "from forbidden_facts import io\n"
        f"with io.atomic_path({str(out)!r}) as tmp:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert len(_temps(tmp_path)) == 1  # nothing can clean up after SIGKILL ...
    io.write_json(out, {"ok": True})
    assert _temps(tmp_path) == [] and io.read_json(out) == {"ok": True}  # ... the next write does


def test_read_only_output_and_corrupt_input_messages_name_the_file_and_the_fix(tmp_path):
    denied = PermissionError(errno.EACCES, "Permission denied", "results/toy/curated/x.json")
    msg = explain(denied, _job(tmp_path))
    assert "cannot write results/toy/curated/x.json" in msg and "chmod" in msg
    shard = tmp_path / "shard-0-of-2.parquet"
    io.write_parquet(shard, pd.DataFrame({"a": range(50)}))
    shard.write_bytes(shard.read_bytes()[:100])
    msg = explain(ValueError("arrow says no"), _job(tmp_path, [shard]))
    assert msg.startswith(f"{shard} is truncated or corrupt") and "Delete it" in msg


def test_run_step_rejects_bad_json_and_missing_inputs(tmp_path, capsys):
    from forbidden_facts.cli import main

    assert main(["run-step", "prompts", "--params", "{model: 1}"]) == 2
    assert "--params is not valid JSON" in capsys.readouterr().err
    assert main(["run-step", "prompts", "--input", f"facts={tmp_path / 'nope.parquet'}"]) == 2
    assert "nope.parquet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run-step", "prompts", "--log", str(tmp_path / "p.log")])
    assert "needs `--input facts=...`" in capsys.readouterr().err


def test_run_step_refuses_an_output_that_overwrites_its_input(tmp_path, capsys):
    # Issue 30, defect 4: `--output prompts=<its own facts input>` overwrote the dataset.
    from forbidden_facts.cli import main

    facts = tmp_path / "facts.parquet"
    io.write_parquet(facts, pd.DataFrame({"fact_id": ["f0"]}))
    before = facts.read_bytes()
    argv = ["run-step", "prompts", "--input", f"facts={facts}", "--output", f"prompts={facts}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "would overwrite --input facts=" in err and "another path" in err
    assert facts.read_bytes() == before
    # Nor a file inside an input folder (a model folder given as input).
    argv = ["run-step", "prompts", "--input", f"model={tmp_path}", "--output", f"x={facts}"]
    assert main(argv) == 2 and "would overwrite" in capsys.readouterr().err


def test_a_step_that_fails_after_writing_one_output_changes_none(tmp_path, monkeypatch, capsys):
    # Issue 21, defect 1: the outputs are staged and swapped in only when all are written.
    monkeypatch.chdir(tmp_path)
    table, summary = Path("results/table.parquet"), Path("results/summary.json")
    io.write_parquet(table, pd.DataFrame({"a": [1]}))
    io.write_json(summary, {"n": 1})
    before = table.read_bytes(), summary.read_bytes()

    def half_step(job):
        io.write_parquet(job.output.table, pd.DataFrame({"a": [2]}))
        raise ValueError("failed before the summary")

    def whole_step(job):
        io.write_parquet(job.output.table, pd.DataFrame({"a": [3]}))
        io.write_json(job.output.summary, {"n": 3})

    from forbidden_facts.cli import Files

    job = _job(tmp_path)
    job.output = Files([("table", str(table)), ("summary", str(summary))], "output")
    with pytest.raises(SystemExit):
        run(job, half_step)
    assert (table.read_bytes(), summary.read_bytes()) == before
    assert _temps(table.parent) == []
    run(job, whole_step)
    assert io.read_json(summary)["n"] == 3 and io.read_parquet(table)["a"].tolist() == [3]
    assert _temps(table.parent) == []


def test_a_folder_where_an_output_file_belongs_is_refused_before_the_step(tmp_path, capsys):
    # Issue 21, defect 8: named before any compute, and the folder is left alone.
    out = tmp_path / "results/table.parquet"
    (out / "keep.txt").parent.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    ran = []
    job = _job(tmp_path)
    job.output = [str(out)]
    with pytest.raises(SystemExit):
        run(job, ran.append)
    assert ran == [] and (out / "keep.txt").read_text() == "mine"
    assert "is a folder, but the rule writes a file there" in capsys.readouterr().err


def test_an_example_fact_that_is_not_kept_is_refused_before_the_ov_scores(tmp_path):
    # Issue 21, defect 4: named before the model is even loaded (no model folder here).
    from forbidden_facts.datasets import DatasetError
    from forbidden_facts.steps.heads import heads

    prompts = pd.DataFrame({"fact_id": ["known", "unknown"], "kind": ["c", "c"]})
    inference = pd.DataFrame({"fact_id": ["known", "unknown"], "kept": [True, False]})
    io.write_parquet(tmp_path / "prompts.parquet", prompts)
    io.write_parquet(tmp_path / "inference.parquet", inference)
    io.write_parquet(tmp_path / "components.parquet", pd.DataFrame({"component": ["EMBED"]}))
    job = SimpleNamespace(
        input=SimpleNamespace(
            model=str(tmp_path / "no_model"),
            prompts=str(tmp_path / "prompts.parquet"),
            inference=str(tmp_path / "inference.parquet"),
            components=str(tmp_path / "components.parquet"),
        ),
        params=SimpleNamespace(heads={"example_fact": "unknown", "top_k": 1, "ov_rows": None}),
    )
    with pytest.raises(DatasetError, match="not kept.*known"):
        heads(job)


def test_kept_records_are_found_where_snakemake_keeps_them(tmp_path):
    # forbidden_facts.safekeep repeats Snakemake's record layout; it must stay the same.
    from snakemake.persistence.file import FilePersistence as Persistence

    from forbidden_facts.safekeep import _record_path

    subject = tmp_path / "metadata"
    subject.mkdir()
    theirs = SimpleNamespace(_max_len=None)
    theirs._fetch_max_len = lambda s: Persistence._fetch_max_len(theirs, s)
    for key in ["results/tiny/tiny/heads.parquet", "resources/models/" + "x" * 400]:
        expected = Persistence._record_path(theirs, str(subject), key)
        assert str(_record_path(subject, key)) == expected


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_results_folder_is_named_before_the_step(tmp_path, capsys):
    out = tmp_path / "results/table.parquet"
    out.parent.mkdir()
    out.parent.chmod(0o500)
    ran = []
    job = _job(tmp_path)
    job.output = [str(out)]
    try:
        with pytest.raises(SystemExit):
            run(job, ran.append)
    finally:
        out.parent.chmod(0o700)
    assert ran == [] and f"cannot write {out.parent}" in capsys.readouterr().err


@pytest.mark.parametrize("step", ["heads", "cumulative_patching", "attribution_shard"])
def test_a_model_that_keeps_no_fact_ends_in_one_sentence(tmp_path, capsys, step):
    # Issue 30, defect 7: KeyError 'attn_forbidden_c' (heads), "need at least one array
    # to concatenate" (cumulative) when the model knows none of the facts.
    from forbidden_facts.cli import main

    files = {
        "prompts": pd.DataFrame({"fact_id": ["f0", "f0", "f1"], "kind": ["c", "nc0", "c"]}),
        "inference": pd.DataFrame({"fact_id": ["f0", "f1"], "kept": [False, False]}),
        "components": pd.DataFrame({"component": ["L0H0ATN"], "effect": [0.1]}),
    }
    (tmp_path / "model").mkdir()
    argv = ["run-step", step, "--input", f"model={tmp_path / 'model'}"]
    argv += ["--log", str(tmp_path / "s.log")]
    for name, frame in files.items():
        io.write_parquet(tmp_path / f"{name}.parquet", frame)
        argv += ["--input", f"{name}={tmp_path / f'{name}.parquet'}"]
    argv += ["--output", f"out={tmp_path / 'out/x.parquet'}", "--wildcard", "scatteritem=1-of-1"]
    argv += ["--params", '{"heads": {"example_fact": null}, "identification": {}}']
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 1
    console = capsys.readouterr().err
    assert f"{step} failed: NoKeptFacts: the model keeps 0 of the 2 facts" in console
    assert "nothing to attribute, patch or attack" in console and "Traceback" not in console
