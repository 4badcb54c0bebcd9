"""First-order and cumulative patching of components between prompt pairs.

For a pair (c, nc_j) with final residuals R_c, R_nc and components r_i:

* nc->c: lo(norm_unembed(R_nc + r_i(c) - r_i(nc))) - lo(nc), the ranking quantity;
* c->nc: lo(norm_unembed(R_c + r_i(nc) - r_i(c))) - lo(c).

First order means downstream components are not recomputed, so one forward pass
per prompt suffices; the patched residuals go through final norm + lm_head in
batches. Cumulative patching adds the top-k components' deltas together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .architectures import adapter_for
from .decompose import (
    Decomposition,
    decompose,
    gained,
    inv_rms,
    norm_unembed,
    rms_linear,
    unembed_device,
    unembed_gained,
    unembed_unnormed,
    vocab_width,
)
from .metrics import VocabIndex, answer_index, answer_logodds, gathered_logodds, to_log10
from .modeling import chunks, encode
from .prompts import encoding_flag

PAIRS = ("nc0", "nc1")
DIRECTIONS = ("nc_to_c", "c_to_nc")


def first_order_rows(
    base_resid: Float[Tensor, "batch d_model"],
    source: Float[Tensor, "batch component d_model"],
    target: Float[Tensor, "batch component d_model"],
) -> Float[Tensor, "batch component d_model"]:
    """Residuals of `target`'s prompt with one component at a time taken from `source`.

    Row i is ``base_resid + source[:, i] - target[:, i]`` where base_resid is the
    target prompt's residual.
    """
    return base_resid[:, None, :] + (source - target)


def cumulative_rows(
    base_resid: Float[Tensor, "batch d_model"],
    source: Float[Tensor, "batch component d_model"],
    target: Float[Tensor, "batch component d_model"],
    order: Int[Tensor, " k"],
) -> Float[Tensor, "batch k d_model"]:
    """Residuals with the first 1..k components of `order` patched in together."""
    deltas = (source - target)[:, order]
    return base_resid[:, None, :] + deltas.cumsum(dim=1)


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


def _decompose_kinds(model, tokenizer, facts: pd.DataFrame) -> dict[str, Decomposition]:
    """One forward pass over the c, nc0 and nc1 prompts of a batch of facts."""
    kinds = ("c", *PAIRS)
    prompts = [p for k in kinds for p in facts[f"prompt_{k}"]]
    ids = [f"{f} ({k})" for k in kinds for f in facts["fact_id"]]
    batch = encode(tokenizer, prompts, add_special_tokens=encoding_flag(facts))
    decomp = decompose(model, batch, check=True, ids=ids)
    n = len(facts)
    return {
        k: Decomposition(
            decomp.components[i * n : (i + 1) * n],
            decomp.labels,
            decomp.resid[i * n : (i + 1) * n],
            decomp.logits[i * n : (i + 1) * n],
        )
        for i, k in enumerate(kinds)
    }


def wide_prompts(prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per fact: fact_id, answer, prompt_c, prompt_nc0, prompt_nc1, add_special_tokens."""
    wide = prompts.pivot(index="fact_id", columns="kind", values="prompt")
    wide.columns = [f"prompt_{k}" for k in wide.columns]
    wide["add_special_tokens"] = encoding_flag(prompts)
    answers = prompts.drop_duplicates("fact_id").set_index("fact_id")["answer"]
    order = prompts.drop_duplicates("fact_id")["fact_id"]
    return wide.join(answers).loc[order].reset_index()


def attribute(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    batch_size: int = 8,
    row_batch: int = 4096,
    vocab: VocabIndex | None = None,
    progress: bool = True,
) -> Iterator[pd.DataFrame]:
    """First-order patching of every component, both pairs and both directions.

    Args:
        model: A Llama-family causal LM.
        tokenizer: Its tokenizer.
        prompts: The prompts table (rows for c, nc0, nc1) of the facts to attribute.
        batch_size: Facts per forward pass (3 prompts each).
        row_batch: Patched rows per norm + lm_head call.
        vocab: Prebuilt VocabIndex.
        progress: Show a progress bar over fact batches.

    Yields:
        Long tables with ``fact_id``, ``pair``, ``direction``, ``component``,
        ``delta_logodds`` (natural log), one per batch of facts.
    """
    vocab = vocab or VocabIndex(tokenizer)
    facts = wide_prompts(prompts)
    labels = None
    for sl in tqdm(list(chunks(len(facts), batch_size)), desc="attribution", disable=not progress):
        part = facts.iloc[sl]
        with torch.no_grad():
            dec = _decompose_kinds(model, tokenizer, part)
            labels = dec["c"].labels
            mask = vocab.answer_mask(list(part["answer"]), dec["c"].logits.shape[-1])
            ids, valid = answer_index(mask)
            # Baselines go through the same float32 path as the patched rows, with the
            # same unnormed logits, so a component that is equal in both prompts has a
            # delta of exactly 0.
            u = unnormed_bases(model, {k: d.resid for k, d in dec.items()})
            base = {
                k: base_logodds(model, d.resid, ids, valid, None if u is None else u[k])
                for k, d in dec.items()
            }
            frames = []
            for pair in PAIRS:
                c, nc = dec["c"], dec[pair]
                # nc->c rows are R_nc + (r(c) - r(nc)), c->nc rows R_c - (r(c) - r(nc)).
                to_c, to_nc = patched_logodds(
                    model,
                    nc.resid,
                    c.components - nc.components,
                    ids,
                    valid,
                    row_batch,
                    base_minus=c.resid,
                    unnormed=None if u is None else (u[pair], u["c"]),
                )
                frames.append(
                    _long(part["fact_id"], pair, "nc_to_c", labels, to_c - base[pair][:, None])
                )
                frames.append(
                    _long(part["fact_id"], pair, "c_to_nc", labels, to_nc - base["c"][:, None])
                )
        yield pd.concat(frames, ignore_index=True)


def _long(
    fact_ids, pair: str, direction: str, labels: Sequence[str], delta: Tensor
) -> pd.DataFrame:
    values = delta.cpu().numpy()
    n_facts, n_comp = values.shape
    return pd.DataFrame(
        {
            "fact_id": np.repeat(np.asarray(list(fact_ids), dtype=object), n_comp),
            "pair": pair,
            "direction": direction,
            "component": np.tile(np.asarray(labels, dtype=object), n_facts),
            "delta_logodds": values.reshape(-1),
        }
    )


def cumulative(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    order_labels: Sequence[str],
    batch_size: int = 8,
    row_batch: int = 4096,
    vocab: VocabIndex | None = None,
    progress: bool = True,
    pair_orders: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Patch the top-k components (nc->c) together for k = 1..len(order_labels).

    This is the second pass over the facts: the forward passes are re-run rather
    than storing every component of every prompt.

    Args:
        pair_orders: The dynamic order: ``{(fact_id, pair): labels}``, each pair patched
            in its own order (`identification.dynamic_orders`) up to k =
            len(order_labels); None patches every pair in `order_labels`.

    Returns:
        (values, fact_ids, pairs): values[p, k-1] is the natural log BF of pair p
        with the first k components patched together.
    """
    vocab = vocab or VocabIndex(tokenizer)
    facts = wide_prompts(prompts)
    results, fact_ids, pairs = [], [], []
    order = None
    for sl in tqdm(list(chunks(len(facts), batch_size)), desc="cumulative", disable=not progress):
        part = facts.iloc[sl]
        with torch.no_grad():
            dec = _decompose_kinds(model, tokenizer, part)
            if order is None:
                index = {label: i for i, label in enumerate(dec["c"].labels)}
                missing = [lbl for lbl in order_labels if lbl not in index]
                if missing:
                    raise ValueError(f"components not in this model: {missing[:5]}")
                order = torch.tensor([index[lbl] for lbl in order_labels])
            mask = vocab.answer_mask(list(part["answer"]), dec["c"].logits.shape[-1])
            ids, valid = answer_index(mask)
            u = unnormed_bases(model, {pair: dec[pair].resid for pair in PAIRS})
            for pair in PAIRS:
                c, nc = dec["c"], dec[pair]
                base_u = None if u is None else u[pair]
                lo_nc = base_logodds(model, nc.resid, ids, valid, base_u)
                if pair_orders is None:
                    deltas = (c.components - nc.components)[:, order.to(c.components.device)]
                else:
                    own = _own_orders(pair_orders, part["fact_id"], pair, index, len(order))
                    rows = torch.arange(len(part))[:, None]
                    deltas = (c.components - nc.components)[rows, own.to(c.components.device)]
                lo, _ = patched_logodds(
                    model,
                    nc.resid,
                    deltas.cumsum(dim=1),
                    ids,
                    valid,
                    row_batch,
                    unnormed=None if base_u is None else (base_u,),
                )
                results.append((lo - lo_nc[:, None]).double().cpu().numpy())
                fact_ids += list(part["fact_id"])
                pairs += [pair] * len(part)
    return np.concatenate(results, axis=0), fact_ids, pairs


def _own_orders(
    pair_orders: Mapping[tuple[str, str], Sequence[str]],
    fact_ids,
    pair: str,
    index: dict[str, int],
    k: int,
) -> Int[Tensor, "batch k"]:
    """Component indices of each fact's own order for `pair`, its first k."""
    out = []
    for fact in fact_ids:
        labels = pair_orders.get((str(fact), pair))
        if labels is None or len(labels) < k:
            raise ValueError(
                f"no dynamic order of {k} components for fact {fact!r}, pair {pair}: the "
                "orders come from this model's attribution.parquet on the same kept facts; "
                "rerun merge_attribution"
            )
        out.append([index[lbl] for lbl in labels[:k]])
    return torch.tensor(out, dtype=torch.long)


def shard_facts(fact_ids: list[str], shard: int, n_shards: int) -> list[str]:
    """Contiguous block `shard` of `n_shards` over the facts in dataset order."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    blocks = np.array_split(np.arange(len(fact_ids)), n_shards)
    return [fact_ids[i] for i in blocks[shard]]


def cumulative_to_n_star(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    order_labels: Sequence[str],
    lbf: pd.Series,
    k_min: int,
    batch_size: int = 8,
    row_batch: int = 4096,
) -> tuple[np.ndarray, list[str], list[str], np.ndarray, int | None]:
    """The cumulative curve, long enough to show N* and the same again after it.

    The curve first goes to `k_min` components; if N* lies beyond half of that,
    it is recomputed up to 2 N* (capped at every component), so the figure shows
    the curve settle after crossing the total effect.

    Args:
        lbf: natural log Bayes factor of every (fact_id, pair), indexed by both.
        k_min: shortest curve.

    Returns:
        (values_log10 [pairs, K], fact_ids, pairs, effect_log10 [pairs], N* or None).
    """
    from .identification import curve_length, n_star

    k = curve_length(len(order_labels), None, k_min)
    while True:
        values, fact_ids, pairs = cumulative(
            model, tokenizer, prompts, order_labels[:k], batch_size=batch_size, row_batch=row_batch
        )
        values = to_log10(values)
        effect = -to_log10(lbf.loc[list(zip(fact_ids, pairs, strict=True))].to_numpy())
        ns = n_star(values.mean(axis=0), float(effect.mean()))
        want = curve_length(len(order_labels), ns, k_min)
        if want <= k:
            return values, fact_ids, pairs, effect, ns
        k = want
