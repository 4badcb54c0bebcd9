"""Keep a job's earlier outputs, and Snakemake's record of them, through a failed or killed job.

Every rule's outputs carry Snakemake's ``update`` flag (``outputflags: update`` in the
Snakefile), so Snakemake does not delete them before the job starts. The step then
writes its outputs to hidden siblings and swaps them in only once all are complete
(:func:`stage` and :func:`swap_in`), so a failed, stopped or killed job leaves every
earlier output in place.

What Snakemake 9 still does to a failed job's outputs is repaired here. It copies
each output back from its own backup (``.snakemake/backups``) with ``shutil.copy``,
so a file gets a fresh mtime and every later rule looks out of date; and it records
the failed attempt's params, inputs and code as the output's metadata, so going back
to the config that made the output reruns it. A Ctrl-C of Snakemake leaves an
incomplete marker and a stale backup instead, and the next run redoes the job. So
before a job starts, :func:`note` keeps each existing output's fingerprint, mtime
and metadata record in ``.snakemake/forbidden_facts/kept/``; a job that succeeds
removes its note (:func:`forget`), and the next Snakemake run (common.smk calls
:func:`settle` before it plans anything) puts back the record, the mtime, and
removes the incomplete marker and the backup of every output that is still the one
the note describes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from base64 import urlsafe_b64encode
from collections.abc import Iterable
from pathlib import Path

from . import io

STATE = Path(".snakemake")
NOTES = STATE / "forbidden_facts" / "kept"


def _record_path(subject: Path, key: str) -> Path:
    """Where Snakemake 9's file persistence keeps the record of `key` under `subject`.

    The same layout as ``snakemake.persistence.file``: the url-safe base64 of the
    path, cut into pieces of at most NAME_MAX - 1 characters, all but the last with
    an ``@`` prefix.
    """
    try:
        max_len = os.pathconf(subject if subject.exists() else ".", "PC_NAME_MAX") or 255
    except (OSError, ValueError):
        max_len = 255
    b64 = urlsafe_b64encode(key.encode()).decode()
    parts = [b64[i : i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    parts = ["@" + p for p in parts[:-1]] + [parts[-1]]
    return subject.joinpath(*parts)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path) -> list:
    """What identifies an output's content: a file's size and sha256; a folder's file list.

    Snakemake copies a folder back with ``shutil.copytree`` (which keeps mtimes), so a
    folder is named by each file's relative path, size and mtime, without reading
    the (possibly very large) model weights.
    """
    if path.is_dir():
        return sorted(
            [str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns]
            for f in path.rglob("*")
            if f.is_file()
        )
    return [path.stat().st_size, _sha256(path)]


def _note_path(outputs: list[str]) -> Path:
    name = hashlib.sha1("\n".join(outputs).encode()).hexdigest()
    return NOTES / f"{name}.json"


def _entry(out: str) -> dict | None:
    path = Path(out)
    if not (path.exists() or path.is_symlink()):
        return None
    record = _record_path(STATE / "metadata", out)
    return {
        "path": out,
        "fingerprint": fingerprint(path),
        "mtime_ns": path.stat().st_mtime_ns,
        "record": json.loads(record.read_text()) if record.is_file() else None,
    }


def _matches(entry: dict) -> bool:
    path = Path(entry["path"])
    try:
        return fingerprint(path) == entry["fingerprint"]
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def note(outputs: Iterable[str]) -> Path | None:
    """Keep the existing outputs' fingerprints and metadata records before a job writes them.

    Only under Snakemake (a ``.snakemake`` folder in the working directory). A note
    left by an earlier attempt of the same job whose outputs are still the ones it
    describes is kept: Snakemake has since overwritten their records with the failed
    attempt's.
    """
    outputs = [str(o) for o in outputs]
    if not STATE.is_dir() or not outputs:
        return None
    path = _note_path(outputs)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if all(_matches(e) for e in old["outputs"]):
                return path
        except (OSError, ValueError, KeyError):
            pass
    entries = [e for e in map(_entry, outputs) if e is not None]
    data = {"pid": os.getpid(), "host": socket.gethostname(), "outputs": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data))
    return path


def forget(outputs: Iterable[str]) -> None:
    """Drop the note of a job that succeeded (Snakemake records its new outputs itself)."""
    _note_path([str(o) for o in outputs]).unlink(missing_ok=True)


def _put_back(entry: dict) -> None:
    out = entry["path"]
    record = _record_path(STATE / "metadata", out)
    if entry["record"] is None:
        record.unlink(missing_ok=True)
    else:
        record.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(record) as tmp:
            tmp.write_text(json.dumps(entry["record"]))
    _record_path(STATE / "incomplete", out).unlink(missing_ok=True)
    path = Path(out)
    backup = STATE / "backups" / (path.relative_to(path.anchor) if path.is_absolute() else path)
    if backup.is_dir() and not backup.is_symlink():
        shutil.rmtree(backup, ignore_errors=True)
    elif backup.exists():
        backup.unlink()
    if not path.is_dir():
        os.utime(path, ns=(path.stat().st_atime_ns, entry["mtime_ns"]))


def settle() -> list[str]:
    """Repair what failed or killed jobs left in Snakemake's records; return the outputs kept.

    Skipped while Snakemake holds a lock here (another run may be writing) and for a
    job that is still running on this machine.
    """
    if not NOTES.is_dir():
        return []
    locks = STATE / "locks"
    if locks.is_dir() and any(locks.iterdir()):
        return []
    kept = []
    for path in sorted(NOTES.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if data.get("host") == socket.gethostname() and _pid_alive(int(data.get("pid", 0))):
            continue
        entries = data.get("outputs", [])
        if entries and all(_matches(e) for e in entries):
            for entry in entries:
                _put_back(entry)
                kept.append(entry["path"])
        path.unlink(missing_ok=True)
    if kept:
        print(
            f"forbidden-facts: {len(kept)} output(s) of failed or stopped jobs are kept as they "
            "were, with their records: " + ", ".join(kept[:5]) + (" ..." if len(kept) > 5 else ""),
            file=sys.stderr,
        )
    return kept


def stop_gently() -> None:
    """Let a second Ctrl-C not crash Snakemake while it stops its jobs.

    The first Ctrl-C stops Snakemake as usual. Snakemake 9 crashes on a second one
    while it shuts down ("Cannot close a running event loop") and leaves its lock and
    the jobs' incomplete markers behind; so the second only says what is happening,
    and a third stops at once.
    """
    presses = []

    def handler(signum, frame):
        presses.append(signum)
        if len(presses) == 2:
            print(
                "forbidden-facts: still stopping the running jobs; their earlier outputs are "
                "kept. Press Ctrl-C once more to abandon them (that leaves Snakemake's lock: "
                "run `snakemake --unlock` before the next run).",
                file=sys.stderr,
            )
            return
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Python's default
        pass


class Outputs(list):
    """A job's output paths, by position and by name (like Snakemake's ``output``)."""

    def __init__(self, paths: list[str], names: dict[str, int]):
        super().__init__(paths)
        for name, index in names.items():
            setattr(self, name, paths[index])


def _names(outputs) -> dict[str, int]:
    named = getattr(outputs, "_names", None)
    if isinstance(named, dict):  # Snakemake's Namedlist: name -> (index, end)
        return {name: start for name, (start, end) in named.items() if end is None}
    values = {k: v for k, v in getattr(outputs, "__dict__", {}).items() if not k.startswith("_")}
    return {k: list(outputs).index(v) for k, v in values.items() if v in list(outputs)}


def stage(outputs) -> tuple[Outputs, list[tuple[Path, Path]]]:
    """Hidden sibling paths to write `outputs` to, and the (staged, final) pairs to swap in.

    Each staged path keeps its final path's suffix (libraries dispatch on it) and
    does not exist yet; a stale one left by a killed job is removed first.
    """
    pairs = []
    for out in outputs:
        dest = Path(str(out))
        # A folder where a file output belongs (all of ours have a suffix; a folder
        # output that Snakemake made holds its .snakemake_timestamp): refused before
        # any compute, and never replaced.
        if dest.is_dir() and dest.suffix and not (dest / ".snakemake_timestamp").exists():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(dest))
        dest.parent.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temps(dest)
        fd, tmp = tempfile.mkstemp(prefix=io.temp_prefix(dest), suffix=dest.suffix, dir=dest.parent)
        os.close(fd)
        os.unlink(tmp)
        pairs.append((Path(tmp), dest))
    staged = Outputs([str(tmp) for tmp, _ in pairs], _names(outputs))
    return staged, pairs


def swap_in(pairs: list[tuple[Path, Path]]) -> None:
    """Move every staged output onto its final path; refuse if the step left one unwritten."""
    missing = [str(dest) for tmp, dest in pairs if not (tmp.exists() or tmp.is_symlink())]
    if missing:
        raise RuntimeError(
            f"the step did not write {', '.join(missing)}; earlier outputs are unchanged"
        )
    for tmp, dest in pairs:
        if tmp.is_dir() or dest.is_dir():
            io.replace_dir(tmp, dest)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, dest)


def discard(pairs: list[tuple[Path, Path]]) -> None:
    """Remove whatever a failed step wrote to its staged outputs."""
    for tmp, _ in pairs:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
