"""A one-token forward pass on a prompt's key/value cache that runs only the layers a
patch leaves to recompute.

The pass's arguments (`last_token_pass`) and the caches it reads: a copy it may append
to (`cache_copy`) and one prompt's cache broadcast over a chunk of rows
(`repeated_cache`).

Patching with recomputation (`forbidden_facts.recomputation`) changes a row's last
position from the lowest layer holding a patched component upwards; every layer below
computes what it computes in the unpatched prompt. Those layers need not run per row:
the unpatched prompt's outputs are kept once (`layer_outputs`) and a skipped layer hands
them on (`skipping_layers_below`). A layer whose every component the patch replaces
(each head and the MLP: `fully_patched_layers`) writes the source prompt's write into the
residual whatever its input, so it adds that write instead of running
(`adding_source_writes`). Rows are grouped so that a forward pass holds rows that run
similar layers (`depth_chunks`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import numpy as np
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .architectures import LlamaAdapter, adapter_for
from .components import parse_label
from .decompose import DecompositionError
from .modeling import Batch, cache_argument


def first_changed_layer(labels: Sequence[str], patch: Bool[Tensor, "row component"]) -> np.ndarray:
    """Per row, the lowest layer that its patch changes (the layers below it run as unpatched).

    A patched head or MLP changes its own layer, the embedding changes layer 0; a row that
    patches nothing changes none (the number of layers).

    Example:
        >>> import torch
        >>> first_changed_layer(["EMBED", "L0H0ATN", "L1MLP"], torch.tensor(
        ...     [[False, False, True], [True, False, True], [False, False, False]])).tolist()
        [1, 0, 2]
    """
    n_layers = 1 + max(parse_label(label)[1] or 0 for label in labels)
    layer = np.array([parse_label(label)[1] or 0 for label in labels])
    patched = patch.cpu().numpy()
    return np.where(patched, layer[None, :], n_layers).min(axis=1, initial=n_layers)


def fully_patched_layers(
    labels: Sequence[str], patch: Bool[Tensor, "row component"]
) -> Bool[np.ndarray, "row layer"]:
    """Per row and layer, whether the patch replaces each head and the MLP of the layer.

    Such a layer writes the source prompt's attention and MLP writes, whatever its input;
    an attention bias (ATB) is the same in both prompts and does not count.

    Example:
        >>> import torch
        >>> fully_patched_layers(["EMBED", "L0H0ATN", "L0MLP", "L1H0ATN", "L1MLP"], torch.tensor(
        ...     [[False, True, True, True, False], [True, True, False, True, True]])).tolist()
        [[True, False], [False, True]]
    """
    parsed = [parse_label(label) for label in labels]
    n_layers = 1 + max(layer or 0 for _, layer, _ in parsed)
    patched = patch.cpu().numpy()
    full = np.ones((len(patched), n_layers), dtype=bool)
    for column, (kind, layer, _) in enumerate(parsed):
        if kind in ("head", "mlp"):
            full[:, layer] &= patched[:, column]
    return full


def depth_chunks(
    fact: Int[Tensor, " row"], first: np.ndarray, size: int, runs: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Row indices of each forward pass: one prompt's rows, at most `size`, deepest start first.

    A pass runs from the lowest first-changed layer among its rows, so each prompt's rows
    go in order of their first changed layer (highest first), and the rows that change
    layer 0 get passes of their own. Those, given `runs` (how many layers each row runs
    once its fully patched layers add their writes), go fewest first, and a row that runs
    more than twice the layers of its pass's first row (plus one) starts a new pass: a
    pass runs every layer that any of its rows runs.
    """
    if size < 1:
        raise ValueError(f"row_batch must be >= 1, got {size}")
    values = fact.tolist()
    start = 0
    while start < len(values):
        stop = start + 1
        while stop < len(values) and values[stop] == values[start]:
            stop += 1
        rows = start + np.argsort(-first[start:stop], kind="stable")
        deep = [r for r in rows.tolist() if first[r] == 0]
        if runs is not None:
            deep.sort(key=lambda r: runs[r])
        chunk: list[int] = []
        for row in [r for r in rows.tolist() if first[r] != 0] + deep:
            if chunk and (
                len(chunk) == size
                or (first[row] == 0) != (first[chunk[0]] == 0)
                or (runs is not None and first[row] == 0 and runs[row] > 2 * runs[chunk[0]] + 1)
            ):
                yield np.array(chunk)
                chunk = []
            chunk.append(row)
        yield np.array(chunk)
        start = stop


@contextlib.contextmanager
def _forwards(layers: Sequence, forwards: Sequence) -> Iterator[None]:
    """Each of `layers` runs its entry of `forwards` instead of its own forward, for a while.

    A layer may already carry a forward of its own (accelerate's device-map hook): exactly
    what was there is put back.
    """
    saved = [layer.__dict__.get("forward") for layer in layers]
    try:
        for layer, forward in zip(layers, forwards, strict=True):
            layer.forward = forward
        yield
    finally:
        for layer, forward in zip(layers, saved, strict=True):
            if forward is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = forward


def skipping_layers_below(ad: LlamaAdapter, first: int, outputs: list[Tensor], rows: int):
    """Layers below `first` return their unpatched last-position output instead of running.

    Args:
        outputs: Per layer, one prompt's unpatched output at the last position, [1, 1, d_model].
    """
    values = [out.expand(rows, -1, -1) for out in outputs[:first]]
    return _forwards(ad.layers[:first], [lambda *args, _value=v, **kwargs: _value for v in values])


def adding_source_writes(
    ad: LlamaAdapter, layers: Sequence[int], writes: Sequence[Float[Tensor, "row d_model"]]
):
    """Layers `layers` return their input plus `writes` (one per layer) instead of running.

    For a layer whose every component a row's patch replaces (`fully_patched_layers`):
    its attention and MLP writes are the source prompt's, so its output is its input
    plus their sum, which the source prompt's own pass gives as its output minus its
    input. Added in float32.
    """

    def adding(write):
        def forward(*args, **kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            return (hidden.float() + write.to(hidden.device)[:, None, :]).to(hidden.dtype)

        return forward

    return _forwards([ad.layers[i] for i in layers], [adding(w) for w in writes])


def cache_copy(cache):
    """A copy of `cache` that a forward pass can append to, leaving `cache` as it was."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    return out


def repeated_cache(cache, prompt: int, n: int):
    """A new cache holding prompt `prompt`'s rows of `cache` `n` times; `cache` stays as it was.

    Each layer is copied shallowly and its keys and values replaced by a broadcast view
    (no copy); the forward pass appends to the copy by concatenation, so the prompts'
    cache is read, never written, and serves every chunk of rows.
    """
    out = cache_copy(cache)
    for layer in out.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            shape = (n, *layer.keys.shape[1:])
            layer.keys = layer.keys[prompt : prompt + 1].expand(shape)
            layer.values = layer.values[prompt : prompt + 1].expand(shape)
    return out


def last_token_pass(model, batch: Batch, cache) -> dict:
    """The forward pass's arguments for the batch's last token on `cache` (the rest)."""
    return {
        "input_ids": batch.input_ids[:, -1:],
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids[:, -1:],
        "use_cache": True,
        "logits_to_keep": 1,
        cache_argument(model): cache,
    }


def layer_writes(model, run) -> tuple[object, list[Float[Tensor, "batch d_model"]]]:
    """``run()``'s result and each decoder layer's output minus its input at the last
    position (float32) in the last forward pass that `run` makes."""
    ad = adapter_for(model)
    found: dict[int, Tensor] = {}

    def keep(i):
        def hook(_mod, args, kwargs, out):
            if not isinstance(out, Tensor):
                raise DecompositionError(
                    f"layer {i} returns {type(out).__name__}, not the hidden states: this "
                    "transformers version's decoder layers cannot be skipped"
                )
            hidden = args[0] if args else kwargs["hidden_states"]
            found[i] = out[:, -1].float() - hidden[:, -1].float()

        return hook

    handles = [
        layer.register_forward_hook(keep(i), with_kwargs=True) for i, layer in enumerate(ad.layers)
    ]
    try:
        result = run()
    finally:
        for handle in handles:
            handle.remove()
    return result, [found[i] for i in range(ad.n_layers)]


def layer_outputs(model, **forward) -> list[Float[Tensor, "batch 1 d_model"]]:
    """Each decoder layer's output at the last position of ``model(**forward)``."""
    ad = adapter_for(model)
    found: dict[int, Tensor] = {}

    def keep(i):
        def hook(_mod, _inp, out):
            if not isinstance(out, Tensor):
                raise DecompositionError(
                    f"layer {i} returns {type(out).__name__}, not the hidden states: this "
                    "transformers version's decoder layers cannot be skipped"
                )
            found[i] = out[:, -1:].clone()

        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(ad.layers)]
    try:
        model(**forward)
    finally:
        for handle in handles:
            handle.remove()
    return [found[i] for i in range(ad.n_layers)]
