"""Loading models and running batched forward passes at the final position.

Prompts are left-padded so that the final position is index -1 for every row;
position ids are rebuilt from the attention mask so a padded prompt sees the
same positions as the prompt alone (batched equals unbatched).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model directory that cannot be loaded, with what to do about it."""


def resolve_device(device: str) -> str:
    """Turn the config's `device` (cpu, cuda, cuda:N, auto) into a torch device string."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"config asks for device {device!r} but torch sees no CUDA device "
            f"(torch {torch.__version__}). Set `device: cpu` (or `auto`) for this model in "
            "config/config.yaml, or install a CUDA build of torch."
        )
    return device


def load_model(
    path: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    device_map: str | dict | None = None,
    attn_implementation: str = "eager",
    allow_cpu_offload: bool = False,
):
    """Load a causal LM of a supported family (forbidden_facts/architectures.py) and its tokenizer.

    Args:
        path: A Hugging Face model directory (config.json, safetensors, tokenizer).
        dtype: One of float32, bfloat16, float16.
        device: cpu, cuda, cuda:N or auto; ignored when `device_map` is given.
        device_map: Passed to transformers to spread a large model over GPUs.
        attn_implementation: "eager" returns attention weights (the head analysis
            needs them); "sdpa" is faster when they are not needed.
        allow_cpu_offload: Refuse a device map that puts layers on the CPU or disk
            unless this is set (it would be silently slow).

    Returns:
        (model, tokenizer), the model in eval mode.
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"{path} is not a model directory (no config.json). Build it first with "
            f"`snakemake --cores all {path}/config.json`, or check `models` in config/config.yaml."
        )
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    from .architectures import UnsupportedArchitecture, attention_implementation, check_model_type
    from .model_folder import check_no_remote_code, model_type_of_dir

    try:
        # Before the weights load: a folder that asks for its own code, or a hub model of
        # an unsupported family, fails here, not after minutes of loading.
        check_no_remote_code(path, f"the model folder {path}")
        model_type = model_type_of_dir(path)
        check_model_type(model_type, f"the model folder {path}")
    except UnsupportedArchitecture as err:
        raise ModelLoadError(str(err)) from err
    check_tokenizer_file(path)  # before the (possibly long) load of the weights
    attn_implementation = attention_implementation(model_type, attn_implementation)
    kwargs = dict(
        dtype=DTYPES[dtype],
        attn_implementation=attn_implementation,
        use_safetensors=True,
    )
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, **kwargs)
    if device_map is None:
        model.to(resolve_device(device))
    else:
        placed = set(getattr(model, "hf_device_map", {}).values())
        if placed & {"cpu", "disk"} and not allow_cpu_offload:
            raise ModelLoadError(
                f"device_map put part of {path.name} on {sorted(placed & {'cpu', 'disk'})}: the GPUs "
                "are too small for it. Use more GPUs, a smaller dtype, or set "
                "`allow_cpu_offload: true` for this model in config (expect it to be very slow)."
            )
    model.eval()
    return model, ready_for_batches(load_tokenizer(path))


def ready_for_batches(tokenizer):
    """`tokenizer`, padding on the left, with a pad token where it has none.

    Llama-2's and Llama-3's tokenizers ship without one; padded positions are masked,
    so which token pads does not change a result (unk, else eos).
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def check_tokenizer_file(path: str | Path) -> None:
    """A model folder must hold ``tokenizer.json`` (else transformers asks for sentencepiece)."""
    import importlib.util

    path = Path(path)
    if not (path / "config.json").exists() or (path / "tokenizer.json").exists():
        return
    if (path / "tokenizer.model").exists() and importlib.util.find_spec("sentencepiece"):
        return  # a slow sentencepiece tokenizer that transformers converts
    raise ModelLoadError(
        f"{path} has no tokenizer.json, the tokenizer every step loads. Copy it from the "
        "model's repository (a hub model: delete the folder and rerun snakemake to download "
        "it again), or rebuild the model (delete the folder, then rerun snakemake)."
    )


def load_tokenizer(path: str | Path):
    """The fast tokenizer of a model folder, or an error naming a missing tokenizer.json."""
    from transformers import AutoTokenizer

    from .model_folder import RemoteCodeRefused, check_no_remote_code

    try:
        check_no_remote_code(path, f"the model folder {path}")
    except RemoteCodeRefused as err:
        raise ModelLoadError(str(err)) from err
    check_tokenizer_file(path)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def input_device(model) -> torch.device:
    """The device that input ids must be on (the embedding's device)."""
    return model.get_input_embeddings().weight.device


@dataclass
class Batch:
    """A left-padded batch of prompts."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]

    def to(self, device) -> Batch:
        return Batch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids))
        )

    def as_kwargs(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def encode(tokenizer, prompts: Sequence[str], add_special_tokens: bool = True) -> Batch:
    """Tokenize prompts, left-pad, and build matching position ids.

    Args:
        tokenizer: A Hugging Face tokenizer.
        prompts: Prompt strings.
        add_special_tokens: Add the tokenizer's BOS (paper-template prompts); False for
            chat-template prompts, which hold their special tokens as text already.
    """
    tokenizer.padding_side = "left"
    enc = tokenizer(
        list(prompts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
    )
    return batch_from_ids(enc["input_ids"], enc["attention_mask"])


def batch_from_ids(
    input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
) -> Batch:
    """Position ids that count only real tokens, so left padding changes nothing."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(input_ids, attention_mask, position_ids)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Left-pad lists of token ids into a Batch."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return batch_from_ids(ids, mask)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices that cover range(n) in steps of `size`."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def final_logits(model, batch: Batch) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits at the final position, checked for NaN/inf by the caller."""
    out, _ = last_position_forward(model, batch)
    return out.logits[:, -1, :]


def common_start(rows: Sequence[Sequence[int]]) -> list[int]:
    """The longest list every row starts with.

    Example:
        >>> common_start([[1, 2, 3], [1, 2, 5], [1, 2]])
        [1, 2]
    """
    out = []
    for column in zip(*rows, strict=False):
        if any(t != column[0] for t in column):
            break
        out.append(column[0])
    return out


# Fewer shared tokens than this are not worth a second forward pass.
MIN_SHARED_TOKENS = 8


def _shared_length(model, batch: Batch) -> tuple[int, list[list[int]]]:
    """How many first tokens every row of `batch` shares (0: run it whole), and its rows."""
    rows = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True)
    ]
    if len(rows) < 2:
        return 0, rows
    # Each row keeps at least its last token to itself: its outputs are read there.
    shared = min(len(common_start(rows)), min(len(r) for r in rows) - 1)
    if shared < MIN_SHARED_TOKENS:
        return 0, rows
    # The continuation is left-padded behind the prefix, so a key's index there is not
    # its position: a sliding window would cut at another place than in the whole prompt,
    # unless it is wider than the batch (then it cuts nothing either way).
    from .architectures import adapter_for

    ad = adapter_for(model)
    width = batch.input_ids.shape[1]
    for layer in range(ad.n_layers):
        window = ad.attention_window(layer)
        if window is not None and window <= width:
            return 0, rows
    return shared, rows


@torch.no_grad()
def last_position_forward(model, batch: Batch, **kwargs) -> tuple[object, int]:
    """The model's forward pass of a left-padded batch, its logits kept at the last position only.

    The first tokens every row shares (in this workflow the system text up to the
    forbidden word, about half of each prompt) run once, and the rest of each row runs
    on their key/value cache, left-padded behind them. Under causal attention this is
    exact: no shared token sees what follows it, and every row's tokens keep their
    positions. Hooks on the model see both passes, the rest of the rows last, so a hook
    that records the last position ends with the rows' own values. A batch whose rows
    share fewer than `MIN_SHARED_TOKENS` tokens runs whole.

    Args:
        kwargs: More arguments of the forward pass (``output_attentions``).

    Returns:
        (the model's output, how many first tokens ran once: 0 if none). With a prefix,
        returned attention weights cover the prefix's keys, then the rest's, left-padded.
    """
    device = input_device(model)
    shared, rows = _shared_length(model, batch)
    if not shared:
        out = model(**batch.to(device).as_kwargs(), logits_to_keep=1, use_cache=False, **kwargs)
        return out, 0
    prefix = shared_prefix(model, rows[0][:shared])
    rest = pad_left([r[shared:] for r in rows], int(batch.input_ids[0, 0])).to(device)
    head = torch.ones(len(rows), shared, dtype=rest.attention_mask.dtype, device=device)
    out = model(
        input_ids=rest.input_ids,
        attention_mask=torch.cat([head, rest.attention_mask], 1),
        position_ids=rest.position_ids + shared,
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument(model): prefix.cache},
        **kwargs,
    )
    return out, shared


def cache_argument(model) -> str:
    """The name of a model's key/value cache argument: ``cache`` (transformers 5) or
    ``past_key_values`` (4.x, deprecated in 5)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prefix_layer_class():
    from transformers.cache_utils import DynamicLayer

    class PrefixLayer(DynamicLayer):
        """One layer's keys and values of a shared prefix: every batch reads them, none adds to them.

        `update` hands the layer the prefix expanded over the batch and followed by the
        batch's own keys and values. Nothing is stored, except the last keys where `keep`
        (a layer whose attention pattern is read afterwards) and the last keys and values
        where `record` (a batch that becomes a prefix itself, `extend_prefix`).
        """

        def __init__(self, keys: Tensor, values: Tensor, keep: bool, record: bool = False) -> None:
            super().__init__()
            self.keys, self.values, self.keep, self.record = keys, values, keep, record
            self.device, self.is_initialized = keys.device, True
            self.last_keys: Tensor | None = None
            self.last_values: Tensor | None = None

        def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
            rows = key_states.shape[0]
            keys = torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2)
            values = torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2)
            if self.keep or self.record:
                self.last_keys = keys
            if self.record:
                self.last_values = values
            return keys, values

    return PrefixLayer


@dataclass
class SharedPrefix:
    """A prompt prefix run once; its key/value cache serves any batch of continuations.

    Args:
        cache: A transformers cache whose layers read the prefix's keys and values and
            store nothing (pass it as the model's `cache_argument`), so one object serves
            every batch.
        length: The prefix's length in tokens (the continuations' first position).
        keep: The layers whose full keys each forward keeps (`last_keys`).
    """

    cache: object
    length: int
    keep: tuple[int, ...] = ()

    def last_keys(self, layer: int) -> Tensor:
        """The keys (prefix and continuation) that `layer` attended with in the last forward."""
        keys = self.cache.layers[layer].last_keys
        if keys is None:
            raise RuntimeError(f"layer {layer}'s keys were not kept: pass it in `keep`")
        return keys


def _wrap(
    keys_values: Sequence[tuple[Tensor, Tensor]], length: int, keep: Sequence[int], record=False
) -> SharedPrefix:
    from transformers.cache_utils import Cache

    layer_class = _prefix_layer_class()
    layers = [layer_class(k, v, i in set(keep), record) for i, (k, v) in enumerate(keys_values)]
    return SharedPrefix(Cache(layers=layers), length, tuple(keep))


@torch.no_grad()
def shared_prefix(model, prefix: Sequence[int], keep: Sequence[int] = ()) -> SharedPrefix:
    """Run `prefix` (one prompt's first tokens) once and wrap its key/value cache for reuse.

    Args:
        model: A causal LM.
        prefix: Token ids of the prefix (at least one).
        keep: Layers whose full keys each later forward keeps (`SharedPrefix.last_keys`).
    """
    from transformers import DynamicCache

    if not len(prefix):
        raise ValueError("a shared prefix needs at least one token")
    # A cache without the model's config keeps every layer's keys whole (no sliding-window
    # truncation): the continuations' masks then see the prefix at its real positions.
    full = DynamicCache()
    ids = torch.as_tensor([list(prefix)], device=input_device(model))
    model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_argument(model): full})
    return _wrap([(layer.keys, layer.values) for layer in full.layers], len(prefix), keep)


def _forward(model, prefix: SharedPrefix, suffixes: Int[Tensor, "batch pos"], cache):
    rows, width = suffixes.shape
    device = input_device(model)
    positions = torch.arange(prefix.length, prefix.length + width, device=device)
    return model(
        input_ids=suffixes.to(device),
        attention_mask=torch.ones(rows, prefix.length + width, dtype=torch.long, device=device),
        position_ids=positions.expand(rows, -1),
        use_cache=True,
        logits_to_keep=1,
        **{cache_argument(model): cache},
    )


@torch.no_grad()
def extend_prefix(model, prefix: SharedPrefix, suffixes: Int[Tensor, "batch pos"]) -> SharedPrefix:
    """prefix + each row of `suffixes` (equal lengths), run once: a prefix of one row each.

    Its continuations must have as many rows as `suffixes`; it keeps `prefix.keep`.
    """
    layers = prefix.cache.layers
    recorder = _wrap([(la.keys, la.values) for la in layers], prefix.length, (), record=True)
    _forward(model, prefix, suffixes, recorder.cache)
    grown = [(la.last_keys, la.last_values) for la in recorder.cache.layers]
    return _wrap(grown, prefix.length + suffixes.shape[1], prefix.keep)


@torch.no_grad()
def continue_prefix(
    model, prefix: SharedPrefix, suffixes: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits at the last position of prefix + each row of `suffixes` (equal lengths)."""
    return _forward(model, prefix, suffixes, prefix.cache).logits[:, -1, :]
