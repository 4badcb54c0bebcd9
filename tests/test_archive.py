"""The paper-revision archive: build, unpack, verify; tampering is caught."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from forbidden_facts import archive
from forbidden_facts.cli import main as cli_main
from forbidden_facts.steps import paper as paper_steps

from .test_tables import write_synthetic_run

CONFIG = {
    "run": {"models": ["toy"], "datasets": ["curated"], "paper": True},
    "paper": {"tag": None},
}


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A working directory with one run's artifacts, figures, tables and a PDF under results/."""
    monkeypatch.chdir(tmp_path)
    write_synthetic_run(tmp_path, "toy", "curated", figures=True)
    paper = tmp_path / "results" / "paper"
    (paper / "tables").mkdir(parents=True)
    (paper / "tables" / "n_star.tex").write_text("\\begin{table}x\\end{table}\n")
    (paper / "main.pdf").write_bytes(b"%PDF-1.4 fake\n")
    return tmp_path


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in (root / "results").rglob("*") if p.is_file()
    )


def _extract(tar_gz: Path, dest: Path) -> Path:
    with tarfile.open(tar_gz) as tar:
        names = tar.getnames()
        tar.extractall(dest, filter="data")
    tops = {n.split("/")[0] for n in names}
    assert len(tops) == 1
    return dest / tops.pop()


def test_round_trip_verifies(workdir, tmp_path):
    files = _files(workdir)
    out = archive.build_archive(
        files,
        "results/archive/forbidden-facts-v1.tar.gz",
        "v1",
        CONFIG,
        extra_provenance={"rule": "archive"},
    )
    assert out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], (
        "temporary file left behind"
    )
    top = _extract(out, tmp_path / "unpacked")
    assert top.name == "forbidden-facts-v1"
    for rel in files:
        assert (top / rel).read_bytes() == (workdir / rel).read_bytes()
    assert archive.verify_manifest(top) == []
    assert archive.verify_manifest(top.parent) == []  # the folder it was unpacked into works too


def test_manifest_format(workdir, tmp_path):
    files = _files(workdir)
    out = archive.build_archive(files, "a.tar.gz", "t", CONFIG)
    top = _extract(out, tmp_path / "x")
    lines = (top / "MANIFEST.tsv").read_text().splitlines()
    assert lines[0] == "path\tsha256\tbytes"
    rows = [line.split("\t") for line in lines[1:]]
    # provenance.json is listed too, so that the config and revisions it records are proven.
    assert [r[0] for r in rows] == sorted([*files, "provenance.json"])
    for rel, digest, size in rows:
        assert len(digest) == 64 and int(size) == (top / rel).stat().st_size


def test_provenance_keys(workdir, tmp_path):
    out = archive.build_archive(
        _files(workdir), "a.tar.gz", "t", CONFIG, extra_provenance={"rule": "archive"}
    )
    prov = json.loads((_extract(out, tmp_path / "x") / "provenance.json").read_text())
    assert {"tag", "created", "git", "config", "versions", "artifacts", "host", "extra"} <= set(
        prov
    )
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["config"] == CONFIG and prov["tag"] == "t" and prov["extra"] == {"rule": "archive"}
    assert {"python", "torch", "transformers", "snakemake", "pandas", "numpy"} <= set(
        prov["versions"]
    )
    assert prov["versions"]["python"] and prov["versions"]["pandas"]
    assert {"platform", "cpu", "cuda_devices"} <= set(prov["host"]) and prov["host"]["cpu"]
    models = prov["artifacts"]["models"]
    assert models == [
        {
            "model": "toy",
            "model_id": "toy-organism (seed 0) toy",
            "model_revision": "sha256:0123456789abcdef",
        }
    ]
    assert prov["artifacts"]["datasets"] == [{"dataset": "curated", "dataset_sha256": "ab" * 32}]
    assert prov["artifacts"]["code_versions"] == ["v0.1-3-gdeadbee"]


@pytest.mark.parametrize("tamper", ["edit", "resize", "delete", "extra"])
def test_tampering_is_reported(workdir, tmp_path, tamper):
    out = archive.build_archive(_files(workdir), "a.tar.gz", "t", CONFIG)
    top = _extract(out, tmp_path / "x")
    target = top / "results" / "toy" / "curated" / "summary.json"
    if tamper == "edit":  # same size, different bytes
        data = bytearray(target.read_bytes())
        data[-2] = ord("X") if data[-2] != ord("X") else ord("Y")
        target.write_bytes(bytes(data))
        expected = "sha256 mismatch: results/toy/curated/summary.json"
    elif tamper == "resize":
        target.write_text(target.read_text() + " ")
        expected = "size mismatch: results/toy/curated/summary.json"
    elif tamper == "delete":
        target.unlink()
        expected = "missing: results/toy/curated/summary.json"
    else:
        (top / "results" / "sneaky.txt").write_text("not listed")
        expected = "unlisted: results/sneaky.txt"
    problems = archive.verify_manifest(top)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_verify_cli(workdir, tmp_path, capsys):
    out = archive.build_archive(_files(workdir), "a.tar.gz", "t", CONFIG)
    top = _extract(out, tmp_path / "x")
    assert cli_main(["verify", str(top)]) == 0
    (top / "results" / "paper" / "main.pdf").write_bytes(b"changed")
    assert cli_main(["verify", str(top)]) == 1
    assert "main.pdf" in capsys.readouterr().out


def test_bad_manifest_header_is_reported(tmp_path):
    (tmp_path / "MANIFEST.tsv").write_text("file\tsha\tsize\n")
    assert any("first line" in p for p in archive.verify_manifest(tmp_path))
    assert archive.verify_manifest(tmp_path / "nowhere")


def test_refuses_files_outside_the_working_directory(workdir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "f.txt"
    outside.write_text("x")
    with pytest.raises(ValueError, match="outside the working directory"):
        archive.build_archive([str(outside)], "a.tar.gz", "t", CONFIG)
    with pytest.raises(FileNotFoundError):
        archive.build_archive(["results/nope.json"], "a.tar.gz", "t", CONFIG)


def test_archive_step(workdir, tmp_path):
    files = _files(workdir)
    job = SimpleNamespace(
        input=files,
        output=["results/archive/forbidden-facts-v2.tar.gz"],
        params=SimpleNamespace(config=CONFIG),
        wildcards=SimpleNamespace(tag="v2"),
        log=[],
    )
    paper_steps.archive(job)
    top = _extract(Path(job.output[0]), tmp_path / "x")
    assert top.name == "forbidden-facts-v2" and archive.verify_manifest(top) == []


def _repack(top: Path, dest: Path, extra: list[tarfile.TarInfo]) -> Path:
    """Pack the unpacked folder `top` again, with hand-made `extra` members appended."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(top, arcname=top.name)
        for info in extra:
            tar.addfile(info, None)
    return dest


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "escape"])
def test_verify_rejects_links_and_paths_that_leave_the_archive(workdir, tmp_path, kind):
    out = archive.build_archive(_files(workdir), "a.tar.gz", "t", CONFIG)
    top = _extract(out, tmp_path / "x")
    assert archive.verify(out) == [] and archive.verify(top) == []
    summary = "results/toy/curated/summary.json"
    target = top / summary
    secret = tmp_path / "secret.json"
    secret.write_bytes(target.read_bytes())  # same bytes: the checksums alone would pass
    info = tarfile.TarInfo(f"{top.name}/results/extra")
    if kind == "symlink":
        # Replace a listed file by a link to an identical file outside the archive.
        target.unlink()
        target.symlink_to(secret)
        info.type, info.linkname = tarfile.SYMTYPE, str(secret)
        expected = "symbolic link"
    elif kind == "hardlink":
        (top / "results" / "extra").hardlink_to(target)
        info.type, info.linkname = tarfile.LNKTYPE, f"{top.name}/{summary}"
        expected = "hard link"
    else:
        info = tarfile.TarInfo("../escaped.txt")
        expected = "unsafe path"
    problems = archive.verify(top) if kind != "escape" else []
    if kind != "escape":
        assert any(p.startswith(expected) for p in problems), problems
    packed = _repack(_extract(out, tmp_path / "clean"), tmp_path / "bad.tar.gz", [info])
    problems = archive.verify(packed)
    assert problems and problems[0].startswith(expected), problems
    assert cli_main(["verify", str(packed)]) == 1
    assert not (tmp_path / "escaped.txt").exists()


def _rewrite_line(top: Path, rel: str) -> None:
    """Rewrite `rel`'s manifest line to match its current content (a consistent forgery)."""
    import hashlib

    manifest = top / "MANIFEST.tsv"
    data = (top / rel).read_bytes()
    lines = [
        f"{rel}\t{hashlib.sha256(data).hexdigest()}\t{len(data)}"
        if line.split("\t")[0] == rel
        else line
        for line in manifest.read_text().splitlines()
    ]
    manifest.write_text("\n".join(lines) + "\n")


def test_provenance_and_removed_files_are_proven(workdir, tmp_path):
    # Issue 21, defect 5: provenance.json is in the manifest; a file removed with its
    # line, or a manifest with no line, does not verify.
    out = archive.build_archive(_files(workdir), "a.tar.gz", "t", CONFIG)
    top = _extract(out, tmp_path / "x")
    prov = top / "provenance.json"
    prov.write_text(prov.read_text().replace('"tag": "t"', '"tag": "u"'))
    assert archive.verify_manifest(top) == ["sha256 mismatch: provenance.json"]

    top = _extract(out, tmp_path / "y")
    rel = "results/toy/curated/summary.json"
    (top / rel).unlink()
    manifest = top / "MANIFEST.tsv"
    manifest.write_text(
        "".join(line for line in manifest.read_text().splitlines(True) if not line.startswith(rel))
    )
    problems = archive.verify_manifest(top)
    assert len(problems) == 1 and "removed or added together with their lines" in problems[0]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "MANIFEST.tsv").write_text("path\tsha256\tbytes\n")
    assert any("lists no file" in p for p in archive.verify_manifest(empty))


def test_the_manifest_sha256_detects_a_consistent_rewrite(workdir, tmp_path, capsys):
    out = Path("results/archive/forbidden-facts-v3.tar.gz")
    job = SimpleNamespace(
        input=_files(workdir),
        output=SimpleNamespace(sha256=str(out) + ".sha256"),
        params=SimpleNamespace(config=CONFIG),
        wildcards=SimpleNamespace(tag="v3"),
        log=[],
    )
    job.output = type("Out", (list,), {})([str(out)])
    job.output.sha256 = str(out) + ".sha256"
    job.output.manifest_sha256 = str(out) + ".manifest.sha256"
    paper_steps.archive(job)
    sidecar = Path(job.output.manifest_sha256).read_text()
    digest = sidecar.split()[0]
    assert sidecar == f"{digest}  forbidden-facts-v3/MANIFEST.tsv\n" and len(digest) == 64
    assert cli_main(["verify", str(out)]) == 0  # the sidecars beside the tarball are used
    said = capsys.readouterr().out
    assert "matches forbidden-facts-v3.tar.gz.manifest.sha256" in said
    assert "the tarball matches forbidden-facts-v3.tar.gz.sha256" in said

    top = _extract(out, tmp_path / "x")
    rel = "results/toy/curated/summary.json"
    (top / rel).write_text('{"forged": true}\n')
    _rewrite_line(top, rel)
    assert archive.verify_manifest(top) == []  # consistent: the manifest alone cannot tell
    assert cli_main(["verify", str(top)]) == 0
    assert "only a comparison with the sha256" in capsys.readouterr().out
    assert cli_main(["verify", "--sha256", digest, str(top)]) == 1
    assert "the archive was rewritten" in capsys.readouterr().out
    assert cli_main(["verify", "--sha256", "beef", str(top)]) == 2


def test_the_test_config_never_overwrites_the_archive_of_another_run(tmp_path):
    # Issue 30, defect 4: the one-minute try, run in a finished default run, replaced the
    # default run's archive and its .sha256 (both runs had the same tag).
    import yaml

    from .conftest import copy_repo, snakemake

    repo = copy_repo(tmp_path / "repo")
    assert yaml.safe_load((repo / "config/test.yaml").read_text())["paper"]["tag"] == "tiny"
    # The archive of another run under the test config's tag: the try refuses to replace it.
    (repo / "results").mkdir()
    (repo / "results/x.json").write_text("{}\n")
    other = {"run": {"models": ["smollm2-135m-obedient"], "datasets": ["curated"]}}
    out = repo / "results/archive/forbidden-facts-tiny.tar.gz"
    archive.build_archive([repo / "results/x.json"], out, "tiny", other, root=repo)
    before = out.read_bytes()
    proc = snakemake(repo, "-n", check=False)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "forbidden-facts-tiny.tar.gz is the archive of another run" in err, err[-2000:]
    assert "['smollm2-135m-obedient']" in err and "paper={tag: mytry}" in err
    assert "Traceback" not in err
    assert out.read_bytes() == before
    # An archive of the same run is simply rebuilt when its inputs change.
    same = {"run": {"models": ["tiny"], "datasets": ["tiny"]}}
    archive.build_archive([repo / "results/x.json"], out, "tiny", same, root=repo)
    assert snakemake(repo, "-n").returncode == 0


def test_sha256sum_checks_the_tarball_and_verify_both_checksums(workdir, tmp_path, capsys):
    # Issue 30, defect 8: `sha256sum -c <archive>.sha256` failed (it held the manifest's hash).
    import hashlib
    import shutil
    import subprocess

    out = Path("results/archive/forbidden-facts-v4.tar.gz")
    files = _files(workdir)
    archive.build_archive_with_sidecar(
        files, out, "v4", CONFIG, sidecar=f"{out}.sha256", manifest_sidecar=f"{out}.manifest.sha256"
    )
    line = Path(f"{out}.sha256").read_text()
    assert line == f"{hashlib.sha256(out.read_bytes()).hexdigest()}  forbidden-facts-v4.tar.gz\n"
    if shutil.which("sha256sum"):
        check = subprocess.run(
            ["sha256sum", "-c", out.name + ".sha256"],
            cwd=out.parent,
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0 and "forbidden-facts-v4.tar.gz: OK" in check.stdout
        # The manifest's checksum file is checked in the folder the archive unpacks into.
        _extract(out, tmp_path / "unpacked")
        shutil.copy(f"{out}.manifest.sha256", tmp_path / "unpacked")
        check = subprocess.run(
            ["sha256sum", "-c", out.name + ".manifest.sha256"],
            cwd=tmp_path / "unpacked",
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0 and "MANIFEST.tsv: OK" in check.stdout
    # A tarball changed after the rule (a member appended, then repacked) fails verify.
    data = bytearray(out.read_bytes())
    data[-1] ^= 1
    out.write_bytes(bytes(data))
    assert cli_main(["verify", str(out)]) == 1
    assert "the tarball was changed after the archive rule wrote it" in capsys.readouterr().out
    # A path that does not exist is called that, not "not a directory".
    assert cli_main(["verify", "results/archive/nope.tar.gz"]) == 2
    assert "results/archive/nope.tar.gz does not exist" in capsys.readouterr().err
    assert archive.verify("nope")[0].startswith("nope does not exist")


def test_provenance_removed_with_its_manifest_line_fails(workdir, tmp_path, capsys):
    # Issue 30, defect 8: verify said ok; provenance.json counts the files, so it must stay.
    out = archive.build_archive(_files(workdir), "a.tar.gz", "t", CONFIG)
    top = _extract(out, tmp_path / "x")
    (top / "provenance.json").unlink()
    manifest = top / "MANIFEST.tsv"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(ln for ln in lines if not ln.startswith("provenance.json\t")))
    assert cli_main(["verify", str(top)]) == 1
    assert "does not list provenance.json" in capsys.readouterr().out
