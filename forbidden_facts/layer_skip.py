"""A one-token forward pass that starts above the layers a patch leaves unchanged.

Patching with recomputation (`forbidden_facts.recomputation`) changes a row's last
position from the lowest layer holding a patched component upwards; every layer below
computes what it computes in the unpatched prompt. Those layers need not run per row:
the unpatched prompt's outputs are kept once (`layer_outputs`) and a skipped layer hands
them on (`skipping_layers_below`). Rows are grouped so that a forward pass holds rows of
similar depth (`depth_chunks`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .architectures import LlamaAdapter, adapter_for
from .components import parse_label
from .decompose import DecompositionError


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


def depth_chunks(fact: Int[Tensor, " row"], first: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Row indices of each forward pass: one prompt's rows, at most `size`, deepest start first.

    A pass runs from the lowest first-changed layer among its rows, so each prompt's rows
    go in order of their first changed layer (highest first), and the rows that change
    layer 0 (every layer recomputed) get passes of their own.
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
        chunk: list[int] = []
        for row in rows.tolist():
            if chunk and (len(chunk) == size or (first[row] == 0) != (first[chunk[0]] == 0)):
                yield np.array(chunk)
                chunk = []
            chunk.append(row)
        yield np.array(chunk)
        start = stop


@contextlib.contextmanager
def skipping_layers_below(ad: LlamaAdapter, first: int, outputs: list[Tensor], rows: int):
    """Layers below `first` return their unpatched last-position output instead of running.

    Args:
        outputs: Per layer, one prompt's unpatched output at the last position, [1, 1, d_model].
    """
    layers = ad.layers[:first]
    # A layer may already carry a forward of its own (accelerate's device-map hook): put
    # back exactly what was there.
    saved = [layer.__dict__.get("forward") for layer in layers]
    try:
        for layer, out in zip(layers, outputs, strict=False):
            value = out.expand(rows, -1, -1)
            layer.forward = lambda *args, _value=value, **kwargs: _value
        yield
    finally:
        for layer, forward in zip(layers, saved, strict=True):
            if forward is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = forward


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
