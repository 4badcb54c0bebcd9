"""Verify an archive against its manifest and, where given, the manifest's sha256."""

from __future__ import annotations

import json
import os
import stat
import tarfile
import tempfile
from pathlib import Path

from ..provenance import sha256_file
from .build import MANIFEST, MANIFEST_HEADER, PROVENANCE, manifest_sha256


def read_sidecar(path: str | os.PathLike) -> str | None:
    """The sha256 that a checksum file records first (None without that file)."""
    path = Path(path)
    if not path.is_file():
        return None
    words = path.read_text().split()
    return words[0].lower() if words else ""


def read_sidecars(archive: str | os.PathLike) -> tuple[str | None, str | None]:
    """(tarball sha256, manifest sha256) recorded beside `archive` (None where absent).

    ``<archive>.sha256`` holds the tarball's (``HEX  NAME``, for ``sha256sum -c``) and
    ``<archive>.manifest.sha256`` the manifest's; an archive of an earlier release holds
    the manifest's in ``<archive>.sha256`` (its line names MANIFEST.tsv).
    """
    archive = Path(archive)
    tarball = manifest = None
    side = archive.with_name(archive.name + ".sha256")
    if side.is_file():
        words = side.read_text().split()
        digest = words[0].lower() if words else ""
        if len(words) > 1 and words[1].endswith(f"/{MANIFEST}"):
            manifest = digest
        else:
            tarball = digest
    found = read_sidecar(archive.with_name(archive.name + ".manifest.sha256"))
    return tarball, found if found is not None else manifest


def _find_root(directory: Path) -> Path:
    # Accept the unpacked top folder or the folder it was unpacked into.
    if (directory / MANIFEST).exists():
        return directory
    children = (
        [p for p in directory.iterdir() if p.is_dir() and (p / MANIFEST).exists()]
        if directory.is_dir()
        else []
    )
    return children[0] if len(children) == 1 else directory


def check_members(archive_path: str | os.PathLike) -> list[str]:
    """Problems with the members of a .tar(.gz) before anything is unpacked (empty = ok).

    Every member must be a regular file or a folder under one top folder: a
    symbolic or hard link, a device, an absolute path or one with ``..`` could
    write or point outside the folder it is unpacked into.
    """
    problems = []
    try:
        with tarfile.open(archive_path) as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        return [f"not a readable .tar.gz: {archive_path} ({err})"]
    tops = set()
    for m in members:
        name = m.name
        parts = Path(name).parts
        if name.startswith("/") or ".." in parts:
            problems.append(f"unsafe path (leaves the archive): {name}")
            continue
        if m.issym():
            problems.append(f"symbolic link: {name} -> {m.linkname}")
        elif m.islnk():
            problems.append(f"hard link: {name} -> {m.linkname}")
        elif not (m.isfile() or m.isdir()):
            problems.append(f"not a regular file or folder: {name}")
        if parts:
            tops.add(parts[0])
    if len(tops) > 1:
        problems.append(f"more than one top folder: {', '.join(sorted(tops))}")
    return problems


def verify_archive(archive_path: str | os.PathLike, sha256: str | None = None) -> list[str]:
    """Check a packed archive: its members (see `check_members`), then its MANIFEST.tsv."""
    problems = check_members(archive_path)
    if problems:
        return problems
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive_path) as tar:
            tar.extractall(tmp, filter="data")
        return verify_manifest(tmp, sha256)


def _link_problems(root: Path) -> list[str]:
    # Walk without following links: a link could point anywhere, and its target's
    # checksum would then be verified in place of a file of the archive.
    problems = []
    for here, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(here) / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                problems.append(f"symbolic link: {rel} -> {os.readlink(path)}")
            elif stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                problems.append(
                    f"hard link: {rel} (shares its data with {info.st_nlink - 1} other)"
                )
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                problems.append(f"not a regular file or folder: {rel}")
    return problems


def verify(target: str | os.PathLike, sha256: str | None = None) -> list[str]:
    """Verify an unpacked archive folder or a packed .tar(.gz); return the problems (empty = ok).

    Args:
        target: The folder or the .tar.gz.
        sha256: The manifest's expected sha256 (printed by the archive rule and kept
            in ``<archive>.sha256``): only it detects a consistent rewrite of files
            and manifest together. For a .tar.gz with a sidecar beside it and no
            `sha256`, the sidecar's is used.
    """
    path = Path(target)
    if not path.exists():
        return [f"{target} does not exist: give an archive's .tar.gz or its unpacked folder"]
    if path.is_file():
        tarball, manifest = read_sidecars(path)
        if sha256 is None:
            sha256 = manifest
        problems = []
        if tarball is not None and sha256_file(path) != tarball:
            problems.append(
                f"{path.name} has sha256 {sha256_file(path)}, not the {tarball} that "
                f"{path.name}.sha256 records: the tarball was changed after the archive rule "
                "wrote it"
            )
        problems += verify_archive(path, sha256)
    else:
        problems = verify_manifest(path, sha256)
    return problems


def verify_manifest(directory: str | os.PathLike, sha256: str | None = None) -> list[str]:
    """Check an unpacked archive against its MANIFEST.tsv; return the problems (empty = ok).

    Reports a missing, empty or malformed manifest, a manifest whose sha256 is not
    `sha256` (when given), files that are missing, differ in size or sha256, files
    present but not listed (other than MANIFEST.tsv), a provenance.json that the
    manifest does not list, and a manifest with fewer or more files than
    provenance.json counts (a file removed together with its line).
    """
    root = _find_root(Path(directory))
    manifest = root / MANIFEST
    if not root.is_dir():
        return [f"not a directory: {directory}"]
    if not manifest.exists():
        return [f"missing {MANIFEST} in {root}"]
    problems_first = []
    if sha256 is not None:
        found = manifest_sha256(manifest.read_bytes())
        if found != sha256.strip().lower():
            problems_first.append(
                f"{MANIFEST} has sha256 {found}, not the {sha256.strip().lower()} that the "
                "archive rule recorded: the archive was rewritten"
            )
    lines = manifest.read_text().splitlines()
    problems: list[str] = problems_first + _link_problems(root)
    links = {p.split(": ", 1)[1].split(" ")[0] for p in problems}
    if not lines or lines[0] != MANIFEST_HEADER:
        problems.append(
            f"{MANIFEST}: first line must be {MANIFEST_HEADER!r}, found {lines[0] if lines else ''!r}"
        )
    listed: set[str] = set()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[2].isdigit():
            problems.append(f"{MANIFEST} line {n}: malformed: {line!r}")
            continue
        rel, digest, size = parts[0], parts[1], int(parts[2])
        if rel.startswith("/") or ".." in Path(rel).parts:
            problems.append(f"{MANIFEST} line {n}: unsafe path {rel!r}")
            continue
        if rel in listed:
            problems.append(f"{MANIFEST} line {n}: {rel} listed twice")
        listed.add(rel)
        path = root / rel
        if rel in links or any(a.is_symlink() for a in [path, *path.parents] if root in a.parents):
            continue  # reported above; never follow it
        if not path.resolve().is_relative_to(root.resolve()):
            problems.append(f"{MANIFEST} line {n}: {rel} leaves the archive")
            continue
        if not path.is_file():
            problems.append(f"missing: {rel}")
            continue
        found = path.stat().st_size
        if found != size:
            problems.append(f"size mismatch: {rel} (manifest {size} bytes, found {found})")
            continue
        if sha256_file(path) != digest:
            problems.append(f"sha256 mismatch: {rel}")
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if rel not in listed and rel != MANIFEST and rel not in links:
            problems.append(f"unlisted: {rel}")
    if not listed:
        problems.append(f"{MANIFEST} lists no file: an empty manifest proves nothing")
    elif PROVENANCE not in listed:
        # Every archive lists its provenance.json, which counts the files: without both,
        # files removed together with their lines would go unnoticed.
        problems.append(
            f"{MANIFEST} does not list {PROVENANCE}, which every archive holds: it was "
            "removed together with its line"
        )
    elif (root / PROVENANCE).is_file():
        try:
            counted = json.loads((root / PROVENANCE).read_text()).get("n_files")
        except (ValueError, AttributeError):
            counted = None
            problems.append(f"{PROVENANCE}: not a json object")
        if isinstance(counted, int) and counted != len(listed) - 1:
            problems.append(
                f"{MANIFEST} lists {len(listed) - 1} files besides {PROVENANCE}, which counts "
                f"{counted}: files were removed or added together with their lines"
            )
    return problems
