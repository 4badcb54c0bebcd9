"""The attribution's peak memory as a formula (benchmarks/README.md, § Attribution memory).

`forbidden_facts.patching.attribute` holds, per batch of facts, the decomposition and
one chunk of logits; these functions count those bytes term by term, so that a
user can size `attribution_batch_size` and `row_batch` before a long GPU job, and
the scale benchmark can hold the measured peak against them.
"""

from __future__ import annotations

import math

from .unembedding import _chunk_shape


def chunk_shape(
    n_comp: int, d_vocab: int, row_batch: int, batch: int, sliced: bool
) -> tuple[int, int]:
    """(rows, vocabulary width) of one chunk of `patched_logodds`'s logits."""
    n_facts, n_rows, width = _chunk_shape(n_comp, d_vocab, row_batch, batch, sliced)
    return n_facts * n_rows, width


def attribution_peak_bytes(
    batch: int,
    components: int,
    d_model: int,
    d_vocab: int,
    row_batch: int,
    tokens: int,
    d_mlp: int,
    n_heads: int,
    dtype_bytes: int,
    sliced: bool,
) -> dict[str, int]:
    """Memory that `attribute` allocates on top of the model weights, in bytes.

    The accounting of benchmarks/README.md § Attribution memory, term by term (float32
    = 4 bytes for everything the patching makes; `dtype_bytes` for the forward's
    activations):

    * held per batch of B facts (3B prompts): the components 3B·C·d, the final
      residuals 3B·d, the final logits 3B·V and their unnormed logits 3B·V
      (`unembedding.unnormed_bases`; float32), the answer mask B·V bytes;
    * per pair: the differences Δ = B·C·d, the bases' logits without their answer
      ids 2·B·V, then either the
      1/rms scales' two transient C·d copies (made fact by fact) or one chunk: two
      logit buffers of r·w, two r·d row copies and the slices' 2·r·⌈V/w⌉ partial
      log-sum-exps, (r, w) = `chunk_shape` (sliced, the CPU's shared-difference
      path: r ≤ min(row_batch, SLICED_ROWS) and r·w ≈ SLICE_LOGITS; else w = V and
      r ≤ min(row_batch, MAX_CHUNK_LOGITS / V); whole facts where they fit);
    * the forward pass of the next batch: its activations over n = 3B·T tokens,
      n·(3·d_mlp + 2·d)·dtype_bytes (at the MLP's product its two d_mlp-wide inputs
      and its output, beside the residual stream and its normed copy) plus the
      attention weights 3B·H·T² (float32),
      while the previous batch's held tensors are still referenced.

    Args:
        sliced: Whether the chunks are vocabulary slices: the shared-difference path
            (`decompose.rms_linear`) on CPU.

    Returns:
        ``forward``, ``patch`` (each phase's peak), ``held`` (the batch's decomposition,
        part of both) and ``total`` = the larger phase.
    """
    b, c, d, v = batch, components, d_model, d_vocab
    f32 = 4
    held = (3 * b * c * d + 3 * b * d + 2 * 3 * b * v) * f32 + b * v
    r, w = chunk_shape(c, v, row_batch, b, sliced)
    per_pair = (b * c * d + 2 * b * v) * f32
    transient = max(2 * c * d, 2 * r * w + 2 * r * d + 2 * r * math.ceil(v / w)) * f32
    patch = held + per_pair + transient
    n = 3 * b * tokens
    forward = n * (3 * d_mlp + 2 * d) * dtype_bytes + 3 * b * n_heads * tokens**2 * f32 + held
    return {"forward": forward, "patch": patch, "held": held, "total": max(forward, patch)}
