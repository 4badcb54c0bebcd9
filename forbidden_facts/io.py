"""Artifact I/O at the edges: atomic writes and provenance-stamped parquet/json.

Every artifact is written to a temporary file beside its destination and renamed
into place, so a killed job never leaves a half-written output behind. A job
killed outright (SIGKILL, a lost node) cannot remove its temporary file; the next
write of the same output removes it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_KEY = b"forbidden_facts.provenance"
_TEMP_REST = re.compile(r"[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?|old\.\d+")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    Args:
        path: Final destination. Its parent directory is created.
        suffix: Suffix of the temporary file (defaults to the destination's), so
            that libraries which dispatch on the extension still work.

    Yields:
        The temporary path to write to. It is removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.",
        suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the artifact the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def temp_prefix(path: str | os.PathLike) -> str:
    """Prefix of the hidden temporary files and folders written beside `path`."""
    return f".{Path(path).name}."


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove hidden temporaries of `path` left by a killed job; return what was removed.

    Only one job writes a given output, so any temporary of it that exists when
    that job starts writing is stale.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = temp_prefix(path)
    for stale in path.parent.glob(prefix + "*"):
        # mkstemp/mkdtemp add 8 random characters (then our suffix); replace_dir adds old.<pid>.
        if not _TEMP_REST.fullmatch(stale.name[len(prefix) :]):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def replace_dir(new: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename the complete folder `new` onto `dest`, replacing `dest` only at the last moment.

    The old `dest` is moved aside first and deleted after the rename, so at every
    instant either the old or the new folder is in place.
    """
    new, dest = Path(new), Path(dest)
    # mkdtemp creates 0700; give the folder the permissions a plain mkdir would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(new, 0o777 & ~umask)
    # Files written through a temporary file (transformers' save_pretrained writes
    # model.safetensors so) are 0600: give every file what a plain open() would.
    for path in new.rglob("*"):
        if path.is_symlink():
            continue
        info = path.stat()
        full = path.is_dir() or info.st_mode & stat.S_IXUSR
        os.chmod(path, (0o777 if full else 0o666) & ~umask)
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f"{temp_prefix(dest)}old.{os.getpid()}")
        dest.rename(old)
    new.rename(dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


@contextlib.contextmanager
def replacing_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Build a folder beside `dest` and swap it in for `dest` only if the block succeeds.

    Removes the hidden temporaries a killed run left beside `dest`
    (:func:`remove_stale_temps`), yields a fresh hidden sibling folder to fill, and
    on success renames it onto `dest` with :func:`replace_dir`. If the block raises
    (an error, Ctrl-C), `dest` stays as it was and the sibling is deleted: at every
    instant `dest` is the old folder or the complete new one, and nothing is left
    behind.

    Args:
        dest: The folder to (re)build. Its parent directory is created.

    Yields:
        The empty hidden folder to build in (``.<name>.<random>`` beside `dest`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), dir=dest.parent))
    try:
        yield tmp
        replace_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(
    path: str | os.PathLike, data: Mapping[str, Any], provenance: Mapping | None = None
) -> None:
    """Write `data` as indented json, atomically, with an optional `provenance` key.

    NaN and infinities (an undefined mean, e.g. over a group with no kept fact) are
    written as null: json has no NaN, and strict readers refuse Python's ``NaN``.
    """
    payload = dict(data)
    if provenance is not None:
        payload["provenance"] = dict(provenance)
    text = json.dumps(_finite(payload), indent=2, default=_json_default, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a json artifact."""
    return json.loads(Path(path).read_text())


def write_parquet(
    path: str | os.PathLike, df: pd.DataFrame, provenance: Mapping | None = None
) -> None:
    """Write `df` as parquet, atomically, with provenance in the schema metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if provenance is not None:
        meta = dict(table.schema.metadata or {})
        meta[PROVENANCE_KEY] = json.dumps(dict(provenance), default=_json_default).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """Read a parquet artifact into pandas."""
    return pd.read_parquet(path)


def read_provenance(path: str | os.PathLike) -> dict:
    """Return the provenance stored in a parquet's schema metadata or a json's key."""
    path = Path(path)
    if path.suffix == ".parquet":
        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(PROVENANCE_KEY)
        return json.loads(raw) if raw else {}
    return read_json(path).get("provenance", {})


def check_readable(path: str | os.PathLike) -> str | None:
    """Say why a parquet or safetensors file is truncated or corrupt (None if it reads).

    Reads only the file's footer or header, so it is cheap even for model weights.
    The message names the file and the fix: delete it (or its model folder) and
    rerun Snakemake, which rebuilds it.
    """
    path = Path(path)
    if path.suffix not in (".parquet", ".safetensors") or not path.is_file():
        return None
    try:
        if path.suffix == ".parquet":
            pq.read_metadata(path)
        else:
            _check_safetensors(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        model_dir = path.parent if path.suffix == ".safetensors" else None
        built = model_dir is not None and model_dir.resolve().parent.parts[-2:] == (
            "resources",
            "models",
        )
        if model_dir is not None and not built:
            # A `source: local` folder (or a link out of one): the user's, never rebuilt.
            fix = (
                f"{model_dir} is not a folder the workflow builds, so it cannot be made "
                "again: put the model's real weights there, or point the config's `path` at "
                "another folder."
            )
        elif model_dir is not None:
            fix = (
                f"Delete the folder {model_dir} and rerun snakemake: the model will be "
                "downloaded or trained again."
            )
        else:
            fix = "Delete it and rerun snakemake: it will be rebuilt (everything else is kept)."
        return f"{path} is truncated or corrupt ({err}). {fix}"
    return None


def _check_safetensors(path: Path) -> None:
    # Layout: 8-byte little-endian header length, a json header giving each
    # tensor's [begin, end) byte offsets, then the data, which must end the file.
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, too short for a header")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(f.read(n))
    end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
    )
    if 8 + n + end != size:
        raise ValueError(f"{size} bytes where the header says {8 + n + end}")


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float (numpy's too) replaced by None."""
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in summaries; make them plain json.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to json")
