"""Answer log-odds of patched residual rows, through the final norm and lm_head.

`patching` builds the rows (a base residual plus a component's difference, one per
component and fact); this module unembeds them in chunks and takes the answer's
log-odds in float32, exactly and without a vocabulary-sized tensor per row
(benchmarks/README.md says how the chunks are sized and what they cost).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .architectures import adapter_for
from .decompose import (
    gained,
    inv_rms,
    norm_unembed,
    rms_linear,
    unembed_device,
    unembed_gained,
    unembed_unnormed,
    vocab_width,
)
from .metrics import answer_logodds, gathered_logodds
from .modeling import chunks

# Most logits held at once per buffer (float32) where a chunk spans the whole
# vocabulary: 2**24 = 64 MB, ~340 rows of a 49152-token vocabulary (one fact of
# SmolLM2-135M). Bigger chunks do not run faster and would dominate peak memory.
MAX_CHUNK_LOGITS = 2**24
# On CPU the shared-difference path walks the vocabulary in slices instead: the rows
# of a chunk (up to SLICED_ROWS, whole facts where they fit) times a slice's width
# hold at most SLICE_LOGITS floats (4 MB, a core's L2 cache), so each slice's passes
# (add, max, scale, exp, sum) run in cache rather than at memory speed, and the
# log-sum-exps of the slices are combined at the end. Measured on SmolLM2-135M's
# shape (benchmarks/README.md): 1.6x faster than whole-vocabulary chunks; a slice
# narrower than MIN_SLICE costs more in per-call overhead than it saves.
SLICED_ROWS = 2048
SLICE_LOGITS = 2**20
MIN_SLICE = 256


def logodds_of_rows(
    model,
    rows: Float[Tensor, "batch row d_model"],
    mask: torch.Tensor,
    row_batch: int,
) -> Float[Tensor, "batch row"]:
    """Reference answer log-odds (float64) of residual rows, each unembedded on its own.

    Slow and memory-hungry on a large vocabulary; `patched_logodds` is the fast
    path used by attribution, and this is what it is tested against.

    Args:
        model: The causal LM (its final norm and lm_head are used).
        rows: Residual rows; the answer of batch entry b is given by `mask[b]`.
        mask: Answer masks, one row per batch entry.
        row_batch: Rows sent through the unembedding at once (memory knob).
    """
    batch, n_rows, d_model = rows.shape
    flat = rows.reshape(batch * n_rows, d_model)
    out = torch.empty(batch * n_rows, dtype=torch.float64, device=rows.device)
    for sl in chunks(batch * n_rows, row_batch):
        logits = norm_unembed(model, flat[sl])
        # Each row's answer mask, built per chunk (a full copy would be rows x d_vocab).
        owner = torch.arange(sl.start, sl.stop, device=mask.device) // n_rows
        out[sl] = answer_logodds(logits, mask[owner].to(logits.device)).to(out.device)
    return out.reshape(batch, n_rows)


def _chunk_shape(
    n_comp: int, d_vocab: int, row_batch: int, batch: int, sliced: bool
) -> tuple[int, int, int]:
    """(facts, components, vocabulary width) per chunk of `patched_logodds`.

    A chunk holds whole facts where they fit, else part of one fact's components:
    at most `row_batch` rows, and SLICED_ROWS (sliced) or MAX_CHUNK_LOGITS / d_vocab
    rows (whole vocabulary). Sliced, the width fills SLICE_LOGITS (at least MIN_SLICE).
    """
    cap = SLICED_ROWS if sliced else MAX_CHUNK_LOGITS // d_vocab
    rows = max(1, min(row_batch, cap))
    n_facts, n_rows = (min(rows // n_comp, batch), n_comp) if n_comp <= rows else (1, rows)
    if not sliced:
        return n_facts, n_rows, d_vocab
    width = max(MIN_SLICE, SLICE_LOGITS // (n_facts * n_rows))
    return n_facts, n_rows, min(d_vocab, width)


def patched_logodds(
    model,
    base_plus: Float[Tensor, "batch d_model"],
    delta: Float[Tensor, "batch row d_model"],
    ids: Int[Tensor, "batch n_ids"],
    valid: Bool[Tensor, "batch n_ids"],
    row_batch: int,
    base_minus: Float[Tensor, "batch d_model"] | None = None,
    linear: bool | None = None,
    unnormed: Sequence[Float[Tensor, "batch d_vocab"]] | None = None,
) -> tuple[Float[Tensor, "batch row"], Float[Tensor, "batch row"] | None]:
    """Answer log-odds (float32) of ``base_plus + delta`` and of ``base_minus - delta``.

    Where the final norm is an RMSNorm without soft-cap (`rms_linear`), each chunk of
    differences goes through lm_head once and both directions are rebuilt from it
    (`_shared_difference_logodds`); otherwise every row is unembedded and its
    log-odds taken on the gathered answer ids (`gathered_logodds`). Either way no
    temporary larger than one chunk of logits is made and nothing is float64.

    Args:
        model: The causal LM (its final norm and lm_head are used).
        base_plus: Residual that `delta` is added to (one per batch entry).
        delta: Differences, `row` per batch entry.
        ids, valid: Answer ids of each batch entry (see `answer_index`).
        row_batch: Most rows unembedded at once (see `_chunk_shape` for the other caps).
        base_minus: Residual that `delta` is subtracted from, or None.
        linear: Use the shared-difference unembedding; None: where `rms_linear` holds.
        unnormed: ``unembed_unnormed`` of `base_plus` (and of `base_minus`) where the
            caller made them already (`unnormed_bases`: one matmul, one pass over
            lm_head, for all of a batch's prompts); not modified. None: made here.

    Returns:
        (log-odds of the plus rows, log-odds of the minus rows or None).
    """
    linear = rms_linear(model) if linear is None else linear
    bases = [base_plus] if base_minus is None else [base_plus, base_minus]
    device = unembed_device(model)
    ids, valid = ids.to(device), valid.to(device)
    if linear:
        if unnormed is None:
            unnormed = [unembed_unnormed(model, b) for b in bases]
        out = _shared_difference_logodds(model, bases, unnormed, delta, ids, valid, row_batch)
    else:
        out = _row_by_row_logodds(model, bases, delta, ids, valid, row_batch)
    return out[0], (out[1] if base_minus is not None else None)


def _row_by_row_logodds(
    model,
    bases: Sequence[Float[Tensor, "batch d_model"]],
    delta: Float[Tensor, "batch row d_model"],
    ids: Int[Tensor, "batch n_ids"],
    valid: Bool[Tensor, "batch n_ids"],
    row_batch: int,
) -> list[Float[Tensor, "batch row"]]:
    """`patched_logodds` for any final norm: each row through `norm_unembed`."""
    batch, n_rows, d_model = delta.shape
    signs = (1.0, -1.0)[: len(bases)]
    out = [torch.empty(batch, n_rows, device=ids.device) for _ in bases]
    n_facts, n_comp, _ = _chunk_shape(n_rows, vocab_width(model), row_batch, batch, False)
    for fs in chunks(batch, n_facts):
        for cs in chunks(n_rows, n_comp):
            nf, nc = fs.stop - fs.start, cs.stop - cs.start
            d = delta[fs, cs].reshape(nf * nc, d_model)
            row_ids = ids[fs].repeat_interleave(nc, dim=0)
            row_valid = valid[fs].repeat_interleave(nc, dim=0)
            for k, (b, s) in enumerate(zip(bases, signs, strict=True)):
                rows = b[fs].repeat_interleave(nc, dim=0) + s * d
                out[k][fs, cs] = gathered_logodds(
                    norm_unembed(model, rows), row_ids, row_valid
                ).view(nf, nc)
    return out


def _shared_difference_logodds(
    model,
    bases: Sequence[Float[Tensor, "batch d_model"]],
    unnormed: Sequence[Float[Tensor, "batch d_vocab"]],
    delta: Float[Tensor, "batch row d_model"],
    ids: Int[Tensor, "batch n_ids"],
    valid: Bool[Tensor, "batch n_ids"],
    row_batch: int,
) -> list[Float[Tensor, "batch row"]]:
    """`patched_logodds` where norm + unembedding is linear up to 1/rms (`rms_linear`).

    With ``U = unembed_unnormed(base)`` and ``G = unembed_unnormed(delta)``, a row's
    logits are ``(U + G) * inv_rms(base + delta)`` and ``(U - G) * inv_rms(base -
    delta)``: one matmul serves both directions. Per row, the answer's logits come
    from its few ids' rows of lm_head, and the rest of the vocabulary's log-sum-exp
    is taken slice by slice (`_chunk_shape`) with U's answer entries set to -inf, so
    that the answer is left out of it exactly: each term is a log-sum-exp of
    positive terms (accurate to a few float32 ulps), nothing cancels.
    """
    batch, n_rows, d_model = delta.shape
    device, d_vocab = ids.device, vocab_width(model)
    signs = (1.0, -1.0)[: len(bases)]
    answer_u = [u.gather(1, ids) for u in unnormed]
    # The bases' logits without their answer ids (padding repeats a real id: harmless).
    unnormed = [u.scatter(1, ids, -math.inf) for u in unnormed]
    head = adapter_for(model).lm_head.weight
    n_facts, n_comp, width = _chunk_shape(n_rows, d_vocab, row_batch, batch, device.type == "cpu")
    slices = list(chunks(d_vocab, width))
    # Two slice buffers for the whole call: allocating them per chunk costs a fresh
    # mapping (page faults, zeroing) each time on CPU.
    g_buf = torch.empty(n_facts * n_comp * width, device=device)
    z_buf = torch.empty_like(g_buf) if len(bases) > 1 else None
    out = [torch.empty(batch, n_rows, device=device) for _ in bases]
    for fs in chunks(batch, n_facts):
        nf = fs.stop - fs.start
        for cs in chunks(n_rows, n_comp):
            nc = cs.stop - cs.start
            x = gained(model, delta[fs, cs].reshape(nf * nc, d_model))
            # All-zero differences (the baselines) have G = 0 exactly: no pass over lm_head.
            zero = not bool(x.any())
            # The answer's logits of G: each fact's own few rows of lm_head.
            answer_g = torch.bmm(x.view(nf, nc, d_model), head[ids[fs]].transpose(1, 2)).float()
            # The patched rows exist only inside inv_rms, one chunk at a time.
            row_scale = [
                inv_rms(model, b[fs, None] + s * delta[fs, cs]).to(device)[..., None]
                for b, s in zip(bases, signs, strict=True)
            ]
            parts = torch.empty(len(bases), nf, nc, len(slices), device=device)
            for j, vs in enumerate(slices):
                n = nf * nc * (vs.stop - vs.start)
                g = g_buf[:n].view(nf * nc, -1)
                g = g.zero_() if zero else unembed_gained(model, x, out=g, vocab=vs)
                g = g.view(nf, nc, -1)
                for k, (u, s) in enumerate(zip(unnormed, signs, strict=True)):
                    # The last direction overwrites g, so two slice buffers suffice.
                    if s < 0:
                        z = torch.sub(u[fs, None, vs], g, out=g)
                    elif k == len(bases) - 1:
                        z = g.add_(u[fs, None, vs])
                    else:
                        z = torch.add(g, u[fs, None, vs], out=z_buf[:n].view(nf, nc, -1))
                    parts[k, ..., j] = _scaled_logsumexp(z, row_scale[k])
            for k, s in enumerate(signs):
                answer = (answer_u[k][fs, None] + s * answer_g) * row_scale[k]
                answer = answer.masked_fill(~valid[fs, None], -math.inf)
                rest = torch.logsumexp(parts[k], dim=-1)
                out[k][fs, cs] = torch.logsumexp(answer, dim=-1) - rest
    return out


def _scaled_logsumexp(
    z: Float[Tensor, "*rows width"], scale: Float[Tensor, "*rows 1"]
) -> Float[Tensor, "*rows"]:
    """log sum exp(scale * z) over the last axis for a positive scale, overwriting `z`.

    A positive scale commutes with the max: lse(s z) = s m + log sum exp(s z - s m).
    (In place, ``z * s - s m`` as a multiply and a subtract is 3x faster on CPU than
    one broadcast addcmul.) A row that is all -inf (a slice made only of answer ids)
    gives -inf.
    """
    shift = z.amax(dim=-1, keepdim=True) * scale
    shift = torch.nan_to_num(shift, neginf=0.0)
    return shift[..., 0] + z.mul_(scale).sub_(shift).exp_().sum(dim=-1).log()


def base_logodds(
    model,
    resid: Float[Tensor, "batch d_model"],
    ids: Int[Tensor, "batch n_ids"],
    valid: Bool[Tensor, "batch n_ids"],
    unnormed: Float[Tensor, "batch d_vocab"] | None = None,
) -> Float[Tensor, " batch"]:
    """Log-odds of unpatched residuals, computed exactly as `patched_logodds` with delta 0.

    Args:
        unnormed: ``unembed_unnormed(resid)`` where the caller has it (see
            `patched_logodds`); passing the same tensor to both keeps a component that
            is equal in both prompts at a delta of exactly 0.
    """
    zero = torch.zeros(resid.shape[0], 1, resid.shape[1], dtype=resid.dtype, device=resid.device)
    # One chunk for the whole batch: a chunk per row would stream lm_head once per row.
    # The rows' logits are U + 0 = U exactly, however they are chunked.
    given = None if unnormed is None else [unnormed]
    return patched_logodds(model, resid, zero, ids, valid, len(resid), unnormed=given)[0][:, 0]


def unnormed_bases(
    model, resids: Mapping[str, Float[Tensor, "batch d_model"]]
) -> dict[str, Float[Tensor, "batch d_vocab"]] | None:
    """``unembed_unnormed`` of each prompt kind's residuals, in one matmul (one pass over
    lm_head instead of one per kind and call); None where the final norm is not
    `rms_linear` (the row-by-row path does not use them)."""
    if not rms_linear(model):
        return None
    kinds = list(resids)
    sizes = [len(resids[k]) for k in kinds]
    u = unembed_unnormed(model, torch.cat([resids[k] for k in kinds]))
    return dict(zip(kinds, u.split(sizes), strict=True))
