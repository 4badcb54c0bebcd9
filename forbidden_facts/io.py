"""Artifact I/O at the edges: atomic writes and provenance-stamped parquet/json.

Every artifact is written to a temporary file beside its destination and renamed
into place, so a killed job never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_KEY = b"forbidden_facts.provenance"


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


def write_json(
    path: str | os.PathLike, data: Mapping[str, Any], provenance: Mapping | None = None
) -> None:
    """Write `data` as indented json, atomically, with an optional `provenance` key."""
    payload = dict(data)
    if provenance is not None:
        payload["provenance"] = dict(provenance)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


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


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in summaries; make them plain json.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to json")
