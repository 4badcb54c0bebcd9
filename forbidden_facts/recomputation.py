"""Activation patching with recomputation at the last position (docs/science.md § Faithfulness).

First-order patching (`forbidden_facts.patching`) puts a component's competing value
into the final residual and lets only the final norm and the unembedding see it.
Here the c prompt's value of chosen components replaces the nc prompt's at each
component's own output, at the last position, and every layer above it runs again.
Only the last position changes, so a layer above the patch needs only the last
position's row: the nc prompt runs once without its last token, keeping its
key/value cache, and each patched variant is a one-token forward pass on that cache
(each layer's attention reads the cached keys and values of the earlier positions
plus the recomputed last row). The model's own forward pass does the recomputation,
so whatever its family does (grouped-query attention, rotary embeddings, q/k norms,
biases, Gemma's sandwich norms and embedding scale, soft-caps) is done as the model
does it; the hook points come from the adapter (forbidden_facts/architectures.py).

What a component's patch replaces, at the last position only:

* ``EMBED``: the embedding module's output (after any embedding scale);
* ``L{l}H{h}ATN``: the head's slice of ``o_proj``'s input, so its write through its
  columns of ``o_proj`` (Gemma-2's post-attention norm is then recomputed on it);
* ``L{l}MLP``: the MLP's write into the residual (the adapter's ``mlp_out_module``);
* ``L{l}ATB``: ``o_proj``'s bias, the same in both prompts: patching it changes nothing.

Patching every component reproduces the c prompt's last-position residual at every
layer, hence its logits; patching none gives the nc prompt's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .architectures import LlamaAdapter, adapter_for
from .decompose import DecompositionError, last_position_writes, model_labels
from .layer_skip import (
    adding_source_writes,
    cache_copy,
    depth_chunks,
    first_changed_layer,
    fully_patched_layers,
    last_token_pass,
    layer_outputs,
    layer_writes,
    repeated_cache,
    skipping_layers_below,
)
from .metrics import VocabIndex, answer_logodds
from .modeling import Batch, cache_argument, chunks, encode, input_device

PAIRS = ("nc0", "nc1")


@dataclass
class Writes:
    """What each component writes at the last position of a batch of prompts (model dtype)."""

    embed: Float[Tensor, "batch d_model"]
    z: list[Float[Tensor, "batch n_heads_x_d_head"]]
    mlp: list[Float[Tensor, "batch d_model"]]
    logits: Float[Tensor, "batch d_vocab"]
    # Each layer's output minus its input (float32): what a fully patched layer adds.
    layer: list[Float[Tensor, "batch d_model"]]


@torch.no_grad()
def writes(model, batch: Batch) -> Writes:
    """One forward pass of `batch`, keeping every component's write at the last position."""
    (store, logits), layer = layer_writes(model, lambda: last_position_writes(model, batch))
    n = adapter_for(model).n_layers
    return Writes(
        store["embed"],
        [store["z"][i] for i in range(n)],
        [store["mlp"][i] for i in range(n)],
        logits,
        layer,
    )


@dataclass(frozen=True)
class _Columns:
    """Where each hooked write sits among the model's labels (`model_labels` order)."""

    embed: int
    heads: list[list[int]]
    mlp: list[int]


def _columns(ad: LlamaAdapter) -> _Columns:
    labels = model_labels(ad.model)
    index = {label: i for i, label in enumerate(labels)}
    layers = range(ad.n_layers)
    heads = [[index[f"L{i}H{h}ATN"] for h in range(ad.n_heads)] for i in layers]
    return _Columns(index["EMBED"], heads, [index[f"L{i}MLP"] for i in layers])


def patch_mask(
    labels: Sequence[str], sets: Sequence[Collection[str]]
) -> Bool[Tensor, "row component"]:
    """One row per set of components to patch together, one column per label of `labels`.

    Args:
        labels: The model's labels (`decompose.model_labels`), the columns.
        sets: The components of each row.

    Example:
        >>> patch_mask(["EMBED", "L0H0ATN", "L0MLP"], [[], ["L0MLP", "EMBED"]]).tolist()
        [[False, False, False], [True, False, True]]
    """
    index = {label: i for i, label in enumerate(labels)}
    mask = torch.zeros(len(sets), len(labels), dtype=torch.bool)
    for row, chosen in enumerate(sets):
        unknown = [c for c in chosen if c not in index]
        if unknown:
            raise ValueError(
                f"components {unknown[:5]} are not components of this model (its labels run "
                f"{labels[0]}, {labels[1]}, ..., {labels[-1]}): the components must come from "
                "this model's own attribution (components.parquet)"
            )
        mask[row, [index[c] for c in chosen]] = True
    return mask


def _replace_last(
    out: Float[Tensor, "row pos d"], chosen: Bool[Tensor, " row"], value: Float[Tensor, "row d"]
) -> Float[Tensor, "row pos d"]:
    """`out` with its last position's row taken from `value` where `chosen`."""
    out = out.clone()
    keep = out[:, -1]
    out[:, -1] = torch.where(chosen[:, None].to(out.device), value.to(out.device, out.dtype), keep)
    return out


@contextlib.contextmanager
def _patch_hooks(
    model,
    source: Writes,
    fact: Int[Tensor, " row"],
    mask: Bool[Tensor, "row component"],
) -> Iterator[None]:
    """Hooks that put source row ``fact[r]``'s writes of ``mask[r]``'s components into row r."""
    ad = adapter_for(model)
    cols = _columns(ad)
    rows = len(fact)
    handles = []

    def output_hook(chosen, value):
        return lambda _mod, _inp, out: _replace_last(out, chosen, value)

    def z_hook(chosen, value):
        def hook(_mod, args):
            z = args[0]
            last = z[:, -1].reshape(rows, ad.n_heads, -1)
            src = value.reshape(rows, ad.n_heads, -1).to(z.device, z.dtype)
            new = torch.where(chosen[:, :, None].to(z.device), src, last)
            z = z.clone()
            z[:, -1] = new.reshape(rows, -1)
            return (z, *args[1:])

        return hook

    try:
        chosen = mask[:, cols.embed]
        if chosen.any():
            hook = output_hook(chosen, source.embed[fact])
            handles.append(ad.embedding.register_forward_hook(hook))
        for layer in range(ad.n_layers):
            chosen = mask[:, cols.heads[layer]]
            if chosen.any():
                hook = z_hook(chosen, source.z[layer][fact])
                handles.append(ad.o_proj(layer).register_forward_pre_hook(hook))
            chosen = mask[:, cols.mlp[layer]]
            if chosen.any():
                hook = output_hook(chosen, source.mlp[layer][fact])
                handles.append(ad.mlp_out_module(layer).register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def _rows(batch: Batch, fact: Int[Tensor, " row"]) -> Batch:
    return Batch(batch.input_ids[fact], batch.attention_mask[fact], batch.position_ids[fact])


@torch.no_grad()
def recomputed_logits(
    model,
    target: Batch,
    source: Writes,
    fact: Int[Tensor, " row"],
    patch: Bool[Tensor, "row component"],
    row_batch: int = 64,
    cached: bool = True,
) -> Iterator[tuple[Int[Tensor, " chunk"], Float[Tensor, "chunk d_vocab"]]]:
    """Last-position logits of target prompts with components patched in from source prompts.

    Row r is target prompt ``fact[r]`` with the components of ``patch[r]`` (columns in
    `model_labels` order) taking the values that source prompt ``fact[r]`` writes at its
    last position, every later layer recomputed.

    Args:
        model: A causal LM of a family in forbidden_facts/architectures.py.
        target: Left-padded target prompts (the nc prompts), at least 2 tokens.
        source: `writes` of the source prompts (the c prompts), one per target prompt.
        fact: The target (and source) prompt of each row.
        patch: The components patched in each row.
        row_batch: Most rows per forward pass (a pass holds the rows of one prompt).
        cached: One-token forward passes on the targets' key/value cache (the fast
            path); False runs every row's whole prompt (the reference it is tested
            against, and the benchmark's baseline).

    Yields:
        (indices of the rows, their logits), chunk by chunk. The cached path runs a
        chunk's layers from the lowest one its rows' patches change; the layers below
        it hand on the unpatched prompt's output, and a layer that each of its rows
        patches whole adds the source's write (`forbidden_facts.layer_skip`).
    """
    ad = adapter_for(model)
    n_labels = len(model_labels(model))
    if patch.shape != (len(fact), n_labels):
        raise ValueError(
            f"patch is {tuple(patch.shape)}, expected (rows, components) = "
            f"({len(fact)}, {n_labels}): one column per label of model_labels(model)"
        )
    if target.input_ids.shape[1] < 2:
        raise ValueError(
            "the target prompts need at least 2 tokens to keep a cache before the last"
        )
    try:
        ad.check_layout()
    except Exception as err:
        raise DecompositionError(str(err)) from err
    device = input_device(model)
    target = target.to(device)
    fact = fact.to(device)
    cache, outputs = None, None
    labels = model_labels(model)
    first = first_changed_layer(labels, patch)
    full = fully_patched_layers(labels, patch)
    above = np.arange(ad.n_layers)[None, :] >= first[:, None]
    if cached:
        prefix = Batch(
            target.input_ids[:, :-1], target.attention_mask[:, :-1], target.position_ids[:, :-1]
        )
        cache = model(**prefix.as_kwargs(), use_cache=True, logits_to_keep=1)[cache_argument(model)]
        # The unpatched last position, once per prompt: what the skipped layers hand on.
        outputs = layer_outputs(model, **last_token_pass(model, target, cache_copy(cache)))
    else:
        # The reference runs every layer of every row.
        first, full = np.zeros_like(first), np.zeros_like(full)
    runs = (above & ~full).sum(1)  # the layers each row runs
    # Chunks of one prompt each: its cache is then broadcast, not copied, to the rows.
    fact_cpu = fact.cpu()
    for chunk in depth_chunks(fact_cpu, first, row_batch, runs):
        idx = torch.as_tensor(chunk)
        rows = _rows(target, fact[idx.to(device)])
        prompt, skip = int(fact_cpu[idx[0]]), int(first[chunk].min())
        whole = [i for i in range(skip, ad.n_layers) if full[chunk, i].all()]
        added = [source.layer[i][fact_cpu[idx]] for i in whole]
        with _patch_hooks(model, source, fact_cpu[idx], patch[idx]):
            if cached:
                unpatched = [layer[prompt : prompt + 1] for layer in outputs]
                with (
                    skipping_layers_below(ad, skip, unpatched, len(chunk)),
                    adding_source_writes(ad, whole, added),
                ):
                    rows_cache = repeated_cache(cache, prompt, len(chunk))
                    out = model(**last_token_pass(model, rows, rows_cache))
            else:
                out = model(**rows.as_kwargs(), use_cache=False, logits_to_keep=1)
        yield idx, out.logits[:, -1]


def recomputed_logodds(
    model,
    target: Batch,
    source: Writes,
    answer_mask: Bool[Tensor, "batch d_vocab"],
    fact: Int[Tensor, " row"],
    patch: Bool[Tensor, "row component"],
    row_batch: int = 64,
    cached: bool = True,
) -> Float[Tensor, " row"]:
    """Answer log-odds (natural, float64) of the rows of `recomputed_logits`.

    Args:
        answer_mask: The answer ids of each prompt (``VocabIndex.answer_mask``).
        Others: as `recomputed_logits`.
    """
    out = torch.empty(len(fact), dtype=torch.float64)
    for rows, logits in recomputed_logits(model, target, source, fact, patch, row_batch, cached):
        out[rows] = answer_logodds(logits, answer_mask[fact.cpu()[rows]]).cpu()
    return out


@dataclass
class Variants:
    """The patched variants of every (fact, pair): their rows of a patch mask.

    Row 0 patches nothing, row 1 every component; then each of the `top` alone, the
    first k of `top` together (k = 1..K, sufficiency), and every component except the
    first k (necessity).
    """

    top: list[str]
    mask: Bool[Tensor, "variant component"]

    @property
    def k(self) -> int:
        return len(self.top)

    def part(self, name: str) -> slice:
        """The rows of ``single``, ``top_k`` or ``rest_k``."""
        start = {"single": 2, "top_k": 2 + self.k, "rest_k": 2 + 2 * self.k}[name]
        return slice(start, start + self.k)


def variants(labels: Sequence[str], top: Sequence[str]) -> Variants:
    """The variants of `Variants` for a model's `labels` and the components `top`, in rank order."""
    top = list(top)
    if len(set(top)) != len(top):
        raise ValueError("the top components must be distinct")
    everything = list(labels)
    sets: list[Collection[str]] = [[], everything]
    sets += [[c] for c in top]
    sets += [top[:k] for k in range(1, len(top) + 1)]
    sets += [set(everything) - set(top[:k]) for k in range(1, len(top) + 1)]
    return Variants(top, patch_mask(everything, sets))


@dataclass
class Recomputed:
    """Log-odds of every (fact, pair) under the variants of `Variants` (natural log).

    ``single``, ``top_k`` and ``rest_k`` are [pairs, K] changes of the answer's log-odds
    from the unpatched nc prompt's (``logodds_nc``); ``logodds_c`` is the c prompt's
    own and ``logodds_all`` the nc prompt's with every component patched (equal to it
    up to float noise).
    """

    fact_ids: list[str]
    pairs: list[str]
    top: list[str]
    logodds_nc: np.ndarray
    logodds_c: np.ndarray
    logodds_all: np.ndarray
    single: np.ndarray
    top_k: np.ndarray
    rest_k: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """The effect of every component together: c's log-odds minus nc's, per pair."""
        return self.logodds_c - self.logodds_nc


def wide_facts(prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per fact with its c, nc0 and nc1 prompts (`patching.wide_prompts`)."""
    from .patching import wide_prompts

    return wide_prompts(prompts)


def recompute(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    top: Sequence[str],
    batch_size: int = 8,
    row_batch: int = 64,
    vocab: VocabIndex | None = None,
    cached: bool = True,
    progress: bool = True,
) -> Recomputed:
    """Patch (nc -> c) the top components singly, the top-k together and all but the top-k.

    Args:
        model: The causal LM.
        tokenizer: Its tokenizer.
        prompts: The prompts table (rows c, nc0, nc1) of the facts.
        top: Components in first-order rank order (K of them).
        batch_size: Facts per batch of prompts.
        row_batch: Patched rows per forward pass.
        vocab: Prebuilt VocabIndex.
        cached: The key/value-cached path (False: full forward passes, the reference).
        progress: Show a progress bar over fact batches.
    """
    from .prompts import encoding_flag

    vocab = vocab or VocabIndex(tokenizer)
    facts = wide_facts(prompts)
    flag = encoding_flag(facts)
    var = variants(model_labels(model), top)
    n_var = len(var.mask)
    out: dict[str, list] = {
        k: [] for k in ("fact_ids", "pairs", "nc", "c", "all", "single", "top_k", "rest_k")
    }
    for sl in tqdm(list(chunks(len(facts), batch_size)), desc="recompute", disable=not progress):
        part = facts.iloc[sl]
        n = len(part)
        with torch.no_grad():
            source = writes(model, encode(tokenizer, list(part["prompt_c"]), flag))
            mask = vocab.answer_mask(list(part["answer"]), source.logits.shape[-1])
            lo_c = answer_logodds(source.logits, mask).cpu().numpy()
            fact = torch.arange(n).repeat_interleave(n_var)
            patch = var.mask.repeat(n, 1)
            for pair in PAIRS:
                target = encode(tokenizer, list(part[f"prompt_{pair}"]), flag)
                lo = recomputed_logodds(model, target, source, mask, fact, patch, row_batch, cached)
                lo = lo.view(n, n_var).numpy()
                base = lo[:, :1]
                out["fact_ids"] += [str(f) for f in part["fact_id"]]
                out["pairs"] += [pair] * n
                out["nc"].append(lo[:, 0])
                out["c"].append(lo_c)
                out["all"].append(lo[:, 1])
                for name in ("single", "top_k", "rest_k"):
                    out[name].append(lo[:, var.part(name)] - base)
    cat = {k: np.concatenate(v) for k, v in out.items() if k not in ("fact_ids", "pairs")}
    return Recomputed(
        out["fact_ids"],
        out["pairs"],
        list(top),
        cat["nc"],
        cat["c"],
        cat["all"],
        cat["single"],
        cat["top_k"],
        cat["rest_k"],
    )
