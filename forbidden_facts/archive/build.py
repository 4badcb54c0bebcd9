"""Build the archive: collect the files, write the manifest and provenance, pack them."""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import importlib.metadata
import io as _io
import json
import os
import platform
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import io
from ..provenance import git_state, sha256_file

MANIFEST = "MANIFEST.tsv"
PROVENANCE = "provenance.json"
MANIFEST_HEADER = "path\tsha256\tbytes"
PACKAGES = (
    "torch",
    "transformers",
    "snakemake",
    "pandas",
    "numpy",
    "pyarrow",
    "jinja2",
    "forbidden-facts",
)


def _relative(path: str | os.PathLike, root: Path) -> str:
    """`path` relative to `root` in posix form; refuses paths outside it."""
    absolute = Path(os.path.abspath(path))
    try:
        rel = absolute.relative_to(root)
    except ValueError as exc:
        raise ValueError(
            f"{path} lies outside the working directory {root}; cannot archive it"
        ) from exc
    return rel.as_posix()


def collect_files(
    files: Iterable[str | os.PathLike], root: str | os.PathLike | None = None
) -> dict[str, Path]:
    """Map each file's archive path (relative to `root`, default cwd) to the file; folders are walked."""
    root = Path(os.path.abspath(root or os.getcwd()))
    out: dict[str, Path] = {}
    for item in files:
        path = Path(item)
        if path.is_dir():
            members = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            members = [path]
        else:
            raise FileNotFoundError(f"cannot archive {path}: no such file")
        for member in members:
            rel = _relative(member, root)
            if rel in (MANIFEST, PROVENANCE):
                raise ValueError(f"{rel} would clash with the archive's own {rel}")
            out[rel] = member
    return dict(sorted(out.items()))


def manifest_text(files: Mapping[str, Path], extra: Mapping[str, bytes] | None = None) -> str:
    """MANIFEST.tsv: a header line, then ``path<TAB>sha256<TAB>bytes`` per file, sorted by path.

    `extra` are files given by their content (the archive's provenance.json).
    """
    rows = {rel: (sha256_file(path), path.stat().st_size) for rel, path in files.items()}
    for rel, data in (extra or {}).items():
        rows[rel] = (hashlib.sha256(data).hexdigest(), len(data))
    lines = [MANIFEST_HEADER]
    for rel in sorted(rows):
        lines.append(f"{rel}\t{rows[rel][0]}\t{rows[rel][1]}")
    return "\n".join(lines) + "\n"


def manifest_sha256(text: bytes) -> str:
    """The sha256 of a MANIFEST.tsv: with it, the archive proves all of its contents."""
    return hashlib.sha256(text).hexdigest()


def sidecar_text(manifest_digest: str, tag: str) -> str:
    """The ``<archive>.manifest.sha256`` file: the manifest's sha256 and its path in the archive.

    ``sha256sum -c`` checks it in the folder the archive was unpacked into.
    """
    return f"{manifest_digest}  forbidden-facts-{tag}/{MANIFEST}\n"


def tarball_sidecar_text(tarball_digest: str, name: str) -> str:
    """The ``<archive>.sha256`` file: the tarball's sha256 and file name, as sha256sum writes it.

    ``sha256sum -c <archive>.sha256`` checks it in the folder that holds the archive.
    """
    return f"{tarball_digest}  {name}\n"


def package_versions(names: Iterable[str] = ("python", *PACKAGES)) -> dict[str, str | None]:
    """Installed versions (importlib.metadata); None for a package that is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        if name == "python":
            out[name] = platform.python_version()
            continue
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict[str, Any]:
    """The machine: platform, CPU model, and the CUDA devices torch sees (None without torch)."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda_devices": None,
    }
    try:
        import torch
    except ImportError:
        return info
    try:
        if torch.cuda.is_available():
            info["cuda_devices"] = [
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            ]
        else:
            info["cuda_devices"] = []
    except Exception as exc:  # a broken driver must not stop the archive
        info["cuda_devices"] = f"unavailable: {exc}"
    return info


def artifact_provenance(files: Mapping[str, Path]) -> dict[str, Any]:
    """Models (id, revision), datasets (sha256) and code versions recorded in the artifacts."""
    models: dict[tuple, dict] = {}
    datasets: dict[tuple, dict] = {}
    code_versions: set[str] = set()
    for path in files.values():
        if path.suffix not in (".json", ".parquet"):
            continue
        try:
            prov = io.read_provenance(path)
        except Exception:  # a json that is not a dict, or any unreadable file: no provenance
            continue
        if not isinstance(prov, dict) or not prov:
            continue
        if prov.get("model_id") is not None or prov.get("model") is not None:
            key = (prov.get("model"), prov.get("model_id"), prov.get("model_revision"))
            models.setdefault(key, {"model": key[0], "model_id": key[1], "model_revision": key[2]})
        if prov.get("dataset") is not None or prov.get("dataset_sha256") is not None:
            key = (prov.get("dataset"), prov.get("dataset_sha256"))
            datasets.setdefault(key, {"dataset": key[0], "dataset_sha256": key[1]})
        if prov.get("code_version"):
            code_versions.add(str(prov["code_version"]))

    def order(item):
        return tuple("" if v is None else str(v) for v in item[0])

    return {
        "models": [v for _, v in sorted(models.items(), key=order)],
        "datasets": [v for _, v in sorted(datasets.items(), key=order)],
        "code_versions": sorted(code_versions),
    }


def provenance_record(
    files: Mapping[str, Path], tag: str, config: Mapping, extra_provenance: Mapping | None = None
) -> dict[str, Any]:
    """The archive's provenance.json."""
    record = {
        "tag": tag,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "config": json.loads(json.dumps(config, default=_plain)),
        "versions": package_versions(),
        "artifacts": artifact_provenance(files),
        "host": host_info(),
        "n_files": len(files),
    }
    if extra_provenance:
        record["extra"] = json.loads(json.dumps(dict(extra_provenance), default=_plain))
    return record


def _plain(obj: Any) -> Any:
    # Snakemake's config and params may hold numpy scalars, paths or other mappings.
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, _io.BytesIO(data))


def build_archive(
    files: Iterable[str | os.PathLike],
    out_tar_gz: str | os.PathLike,
    tag: str,
    config: Mapping,
    extra_provenance: Mapping | None = None,
    root: str | os.PathLike | None = None,
) -> Path:
    """Write ``forbidden-facts-<tag>/`` with `files`, MANIFEST.tsv and provenance.json as a .tar.gz.

    Args:
        files: Files (or folders) to pack, relative to `root` or absolute inside it.
        out_tar_gz: The archive to write (atomically).
        tag: Names the top folder, ``forbidden-facts-<tag>``.
        config: The resolved workflow config, recorded in provenance.json.
        extra_provenance: More keys for provenance.json (under ``extra``).
        root: Folder the archive paths are relative to (default: the working directory).

    Returns:
        The archive's path.
    """
    if not tag or "/" in tag:
        raise ValueError(f"bad archive tag {tag!r}")
    members = collect_files(files, root)
    if not members:
        raise ValueError("nothing to archive: the rule gave no files")
    top = f"forbidden-facts-{tag}"
    provenance = (
        json.dumps(
            provenance_record(members, tag, config, extra_provenance), indent=2, default=_plain
        )
        + "\n"
    ).encode()
    # provenance.json is listed in the manifest like every other file, so that an edit
    # of the recorded config, model revisions or dataset checksums is detected.
    manifest = manifest_text(members, {PROVENANCE: provenance}).encode()
    now = _dt.datetime.now(_dt.UTC).timestamp()
    out = Path(out_tar_gz)
    with io.atomic_path(out, suffix=".tmp") as tmp:
        # Owner names and the gzip header's timestamp say nothing about the results; leave them out.
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            folder = tarfile.TarInfo(top)
            folder.type = tarfile.DIRTYPE
            folder.mode = 0o755
            folder.mtime = int(now)
            tar.addfile(folder)
            _add_bytes(tar, f"{top}/{MANIFEST}", manifest, now)
            _add_bytes(tar, f"{top}/{PROVENANCE}", provenance, now)
            for rel, path in members.items():
                info = tar.gettarinfo(str(path), arcname=f"{top}/{rel}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
    return out


def read_member(archive_path: str | os.PathLike, name: str) -> bytes:
    """The content of member `name` of a .tar(.gz)."""
    with tarfile.open(archive_path) as tar:
        fh = tar.extractfile(name)
        if fh is None:
            raise KeyError(f"{archive_path} has no file {name}")
        return fh.read()


def build_archive_with_sidecar(
    files: Iterable[str | os.PathLike],
    out_tar_gz: str | os.PathLike,
    tag: str,
    config: Mapping,
    sidecar: str | os.PathLike | None = None,
    extra_provenance: Mapping | None = None,
    manifest_sidecar: str | os.PathLike | None = None,
) -> str:
    """`build_archive`, then write the checksum files beside it; return the manifest's sha256.

    `sidecar` (``<archive>.sha256``) gets the tarball's sha256 in sha256sum's ``HEX  NAME``
    form; `manifest_sidecar` (``<archive>.manifest.sha256``) the manifest's, which
    `forbidden-facts verify` compares (it proves the contents however they are repacked).
    """
    out = build_archive(files, out_tar_gz, tag, config, extra_provenance)
    digest = manifest_sha256(read_member(out, f"forbidden-facts-{tag}/{MANIFEST}"))
    if sidecar is not None:
        with io.atomic_path(sidecar) as tmp:
            tmp.write_text(tarball_sidecar_text(sha256_file(out), out.name))
    if manifest_sidecar is not None:
        with io.atomic_path(manifest_sidecar) as tmp:
            tmp.write_text(sidecar_text(digest, tag))
    return digest
