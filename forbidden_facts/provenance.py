"""Provenance: which model, dataset and code every artifact came from."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import subprocess
from pathlib import Path

from . import __version__

REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    """`git describe --always --dirty` of the checkout, or the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return out.stdout.strip() or __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def git_state() -> dict:
    """The git commit and dirty flag of the checkout (None outside git)."""

    def run(*args):
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )

    try:
        commit = run("rev-parse", "HEAD")
        status = run("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file: the one checksum helper every module uses.

    ``hashlib.file_digest`` streams the file in blocks, so a 100 GB shard of
    weights never sits in memory.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def model_provenance(model_dir: str | Path) -> dict:
    """Model id and revision from the model directory's provenance or training record."""
    model_dir = Path(model_dir)
    prov = model_dir / "provenance.json"
    if prov.exists():
        data = json.loads(prov.read_text())
        if data.get("source") == "wheel" and "parts" in data:
            # A GGUF file joined from several wheels: named by its first and last part,
            # pinned by the joined file's sha256 (which every part's bytes enter).
            first, last = data["parts"][0], data["parts"][-1]
            return {
                "model_id": f"{first['package']}=={first['version']}..{last['package']}=="
                f"{last['version']} ({len(data['parts'])} wheels joined)",
                "model_revision": f"sha256:{data['gguf_sha256']}",
            }
        if data.get("source") == "wheel":
            return {
                "model_id": f"{data['package']}=={data['version']}:{data['file']}",
                "model_revision": f"sha256:{data['wheel_sha256']}",
            }
        if data.get("source") == "finetune":
            # Its base model's identity, the recipe's seed and the weights' digest.
            weights = sorted(model_dir.glob("*.safetensors"))
            digest = sha256_file(weights[0])[:16] if weights else None
            return {
                "model_id": f"{data['base_model_id']} fine-tuned (seed {data['seed']})",
                "model_revision": f"sha256:{digest}",
            }
        return {"model_id": data.get("repo_id"), "model_revision": data.get("revision")}
    record = model_dir / "toy_training.json"
    if record.exists():
        data = json.loads(record.read_text())
        weights = sorted(model_dir.glob("*.safetensors"))
        digest = sha256_file(weights[0])[:16] if weights else None
        return {
            "model_id": f"toy-organism (seed {data['config']['seed']})",
            "model_revision": f"sha256:{digest}",
        }
    weights = weight_files(model_dir)
    if weights:
        # A local folder (source: local): named by its path, pinned by its weights.
        manifest = weight_manifest(model_dir)
        listing = "".join(f"{name}  {digest}\n" for name, digest in manifest.items())
        return {
            "model_id": str(model_dir.resolve()),
            "model_revision": "sha256:" + hashlib.sha256(listing.encode()).hexdigest(),
            "model_manifest": manifest,
        }
    return {"model_id": model_dir.name, "model_revision": None}


def weight_files(model_dir: str | Path) -> list[Path]:
    """The weight files of a model folder (safetensors shards), sorted by name."""
    return sorted(Path(model_dir).glob("*.safetensors"))


def weight_manifest(model_dir: str | Path) -> dict[str, str]:
    """sha256 of every weight file of a model folder, by file name.

    Hashing a 14 GB model takes a minute, so the manifest is computed once per process
    for a folder whose files keep their sizes and modification times.
    """
    files = weight_files(model_dir)
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return dict(_manifest(key))


def weight_fingerprint(model_dir: str | Path) -> list[list]:
    """What Snakemake compares to notice weights changed in place: per weight file, its
    name, the file it resolves to, its size, modification time (ns) and inode.

    Cheap (one stat per file, no reading): a file overwritten (`cp`), replaced (`mv`)
    or re-linked changes it; the step it triggers then records each file's sha256.
    """
    out = []
    for f in weight_files(model_dir):
        info = f.stat()
        out.append([f.name, str(f.resolve()), info.st_size, info.st_mtime_ns, info.st_ino])
    return out


@functools.cache
def _manifest(key: tuple) -> tuple[tuple[str, str], ...]:
    return tuple((Path(path).name, sha256_file(path)) for path, _, _ in key)


def stamp(
    model: str | None = None,
    model_dir=None,
    dataset: str | None = None,
    dataset_sha256=None,
    **extra,
) -> dict:
    """The provenance record written into every artifact."""
    record = {
        "code_version": code_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if model is not None:
        record["model"] = model
    if model_dir is not None:
        record.update(model_provenance(model_dir))
    if dataset is not None:
        record["dataset"] = dataset
    if dataset_sha256 is not None:
        record["dataset_sha256"] = dataset_sha256
    record.update(extra)
    return record
