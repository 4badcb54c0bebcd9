"""Split the final-position residual stream into the paper's components.

Before the final norm, the last token's residual stream is exactly

    EMBED + sum_l ( sum_h L{l}H{h}ATN [+ L{l}ATB] + L{l}MLP ),

where a head's term is its slice of the input of ``o_proj`` times the matching
columns of ``o_proj``'s weight (times a post-attention norm's scale where the family
has one). Which modules are hooked, and how, is the model adapter's business
(forbidden_facts/architectures.py); the hooks are removed in a ``finally`` and the
components checked against the model's own residual and logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .architectures import AdapterMismatch, adapter_for
from .components import component_labels, parse_label  # noqa: F401 (re-exported)
from .modeling import Batch, last_position_forward
from .norms import rms_scale, softcap


class DecompositionError(RuntimeError):
    """The components do not rebuild the model's residual stream or logits."""


# Relative tolerance of the rebuilt residual, by the dtype the model runs in.
RESID_RTOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def model_shape(model) -> tuple[int, int, int]:
    """(n_layers, n_heads, d_head) of a model of a supported family."""
    ad = adapter_for(model)
    return ad.n_layers, ad.n_heads, ad.d_head


def model_labels(model) -> list[str]:
    """The component labels of a model, in residual order (ATB where o_proj has a bias)."""
    ad = adapter_for(model)
    return component_labels(ad.n_layers, ad.n_heads, ad.has_o_bias)


@dataclass
class Decomposition:
    """Components of the final position's residual stream, with labels beside them."""

    components: Float[Tensor, "batch component d_model"]
    labels: list[str]
    resid: Float[Tensor, "batch d_model"]
    logits: Float[Tensor, "batch d_vocab"]


@contextlib.contextmanager
def _capture(model) -> Iterator[dict]:
    """Hooks that record the final position's embedding, head inputs, MLP outputs, residual."""
    ad = adapter_for(model)
    store: dict = {"z": {}, "mlp": {}, "attn_out": {}}
    handles = []
    # Each hook clones the last position: a view (``out[:, -1]``) would keep the
    # layer's whole batch x pos x d_model tensor alive until the forward pass ends,
    # 2 per layer (for Llama-2-7b at 24 prompts of 120 tokens, 1.5 GB in float16).

    def embed_hook(_mod, _inp, out):
        store["embed"] = out[:, -1].clone()

    def pre_hook(key, layer):
        def hook(_mod, args):
            store[key][layer] = args[0][:, -1].clone()

        return hook

    def mlp_hook(layer):
        def hook(_mod, _inp, out):
            store["mlp"][layer] = out[:, -1].clone()

        return hook

    def norm_pre(_mod, args):
        store["resid"] = args[0][:, -1].clone()

    try:
        try:
            ad.check_layout()
        except AdapterMismatch as err:
            raise DecompositionError(str(err)) from err
        handles.append(ad.embedding.register_forward_hook(embed_hook))
        for i in range(ad.n_layers):
            handles.append(ad.o_proj(i).register_forward_pre_hook(pre_hook("z", i)))
            post = ad.attn_post_norm_module(i)
            if post is not None:
                handles.append(post.register_forward_pre_hook(pre_hook("attn_out", i)))
            handles.append(ad.mlp_out_module(i).register_forward_hook(mlp_hook(i)))
        handles.append(ad.final_norm_module.register_forward_pre_hook(norm_pre))
        yield store
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def last_position_writes(model, batch: Batch) -> tuple[dict, Float[Tensor, "batch d_vocab"]]:
    """What each part writes at the final position, as the hooks of `decompose` see it.

    Returns:
        (store, logits): ``store["embed"]`` [batch d_model] (after any embedding scale),
        ``store["z"][l]`` [batch n_heads_x_d_head] (o_proj's input), ``store["mlp"][l]``
        [batch d_model] (the MLP's write), in the model's dtype; the final logits.
    """
    with _capture(model) as store:
        out, _ = last_position_forward(model, batch)
    return store, out.logits[:, -1]


def head_outputs(
    z: Float[Tensor, "batch n_heads_x_d_head"],
    w_o: Float[Tensor, "d_model n_heads_x_d_head"],
    n_heads: int,
) -> Float[Tensor, "batch head_index d_model"]:
    """Each head's write into the residual: its slice of z times its columns of W_O."""
    batch = z.shape[0]
    d_model = w_o.shape[0]
    z = z.reshape(batch, n_heads, -1)
    w = w_o.reshape(d_model, n_heads, -1)
    return torch.einsum("bhk,dhk->bhd", z, w)


@torch.no_grad()
def decompose(model, batch: Batch, check: bool = True, ids=None) -> Decomposition:
    """Run one forward pass and return the final position's components.

    Args:
        model: A causal LM of a family in forbidden_facts/architectures.py.
        batch: Left-padded prompts (the final position is -1 in every row).
        check: Verify that the components rebuild the residual and the logits.
        ids: Names of the rows (fact ids) used in error messages.

    Returns:
        A Decomposition; components are float32 on the final norm's device.
    """
    ad = adapter_for(model)
    with _capture(model) as store:
        out, _ = last_position_forward(model, batch)
    device = ad.final_norm_module.weight.device
    parts = [store["embed"].to(device, torch.float32)[:, None]]
    for i in range(ad.n_layers):
        attn = head_outputs(store["z"][i], ad.w_o(i), ad.n_heads).to(device, torch.float32)
        bias = ad.b_o(i)
        if bias is not None:
            bias = bias.to(device, torch.float32).expand(attn.shape[0], 1, -1)
            attn = torch.cat([attn, bias], dim=1)
        post = ad.attn_post_norm(i)
        if post is not None:
            # The unpatched prompt's norm scale: each head's share of the output stays linear.
            attn_out = store["attn_out"][i].to(device)
            attn = attn * (post.scale(attn_out) * post.gain.to(device))[:, None]
        parts.append(attn)
        parts.append(store["mlp"][i].to(device, torch.float32)[:, None])
    components = torch.cat(parts, dim=1)
    resid = store["resid"].to(device, torch.float32)
    logits = out.logits[:, -1].to(device, torch.float32)
    decomp = Decomposition(components, model_labels(model), resid, logits)
    if check:
        check_decomposition(model, decomp, ids)
    return decomp


def norm_unembed(model, resid: Float[Tensor, "row d_model"]) -> Float[Tensor, "row d_vocab"]:
    """Final norm, unembedding and soft-cap (where the family has one), as float32."""
    ad = adapter_for(model)
    norm, head = ad.final_norm_module, ad.lm_head
    x = resid.to(norm.weight.device, norm.weight.dtype)
    x = norm(x).to(head.weight.device)
    return softcap(head(x), ad.logit_softcap).float()


def unembed_device(model) -> torch.device:
    """The device the unembedding (lm_head) lives on."""
    return adapter_for(model).lm_head.weight.device


def vocab_width(model) -> int:
    """Rows of the unembedding (the logits' width)."""
    return adapter_for(model).d_vocab


def rms_linear(model) -> bool:
    """Whether final norm + unembedding is linear up to a scale per row.

    With an RMSNorm (Llama's, or Gemma's (1 + w) one), a bias-free unembedding and
    no logit soft-cap,

        norm_unembed(x) = unembed_unnormed(x) * inv_rms(x),

    so the unembedding of ``x + d`` is ``unembed_unnormed(x) + unembed_unnormed(d)``
    rescaled: patched rows that share a base residual need only their
    differences unembedded, and a difference and its negative share one matmul.
    False for a LayerNorm, an unembedding bias or a soft-cap (Gemma-2): callers
    then unembed every row directly.
    """
    ad = adapter_for(model)
    norm = ad.final_norm
    return norm.kind == "rms" and ad.unembed_bias is None and ad.logit_softcap is None


def inv_rms(model, x: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows"]:
    """1 / rms of residual rows as the final RMSNorm computes it (float32)."""
    ad = adapter_for(model)
    weight = ad.final_norm_module.weight
    x = x.to(weight.device, weight.dtype).float()
    return rms_scale(x, ad.final_norm.eps)


def gained(model, x: Float[Tensor, "row d_model"]) -> Float[Tensor, "row d_model"]:
    """``gain * x``: the final RMSNorm without its 1/rms, in the model's dtype, on lm_head's device."""
    ad = adapter_for(model)
    weight = ad.final_norm_module.weight
    gain = ad.final_norm.gain.to(weight.device, weight.dtype)
    return (x.to(weight.device, weight.dtype) * gain).to(ad.lm_head.weight.device)


def unembed_gained(
    model,
    x: Float[Tensor, "row d_model"],
    out: Float[Tensor, "row width"] | None = None,
    vocab: slice | None = None,
) -> Float[Tensor, "row width"]:
    """lm_head applied to `gained` rows, as float32; only the `vocab` slice of its rows.

    Args:
        model: The causal LM.
        x: Rows returned by `gained`.
        out: A float32 buffer to write into (reused across chunks, which on CPU saves
            mapping and zeroing fresh pages for every chunk); None: a new tensor.
        vocab: The token ids (a contiguous slice) to unembed; None: all of them.
    """
    weight = adapter_for(model).lm_head.weight
    if vocab is not None:
        weight = weight[vocab]
    if out is None:
        return torch.nn.functional.linear(x, weight).float()
    if weight.dtype == out.dtype:
        return torch.mm(x, weight.t(), out=out)
    return out.copy_(torch.nn.functional.linear(x, weight))


def unembed_unnormed(
    model, x: Float[Tensor, "row d_model"], out: Float[Tensor, "row d_vocab"] | None = None
) -> Float[Tensor, "row d_vocab"]:
    """lm_head(gain * x) without the 1/rms factor, in the model's dtype, as float32."""
    return unembed_gained(model, gained(model, x), out=out)


def check_decomposition(model, decomp: Decomposition, ids=None) -> None:
    """Fail loudly, naming the row, if the components do not rebuild residual and logits."""
    dtype = adapter_for(model).final_norm_module.weight.dtype
    rtol = RESID_RTOL.get(dtype, 1e-2)
    rebuilt = decomp.components.sum(dim=1)
    err = (rebuilt - decomp.resid).norm(dim=-1) / decomp.resid.norm(dim=-1).clamp_min(1e-12)
    logits = norm_unembed(model, rebuilt)
    scale = decomp.logits.abs().amax(dim=-1).clamp_min(1.0)
    lerr = (logits - decomp.logits).abs().amax(dim=-1) / scale
    bad = (err > rtol) | (lerr > 10 * rtol)
    if bad.any():
        row = int(torch.nonzero(bad).flatten()[0])
        name = ids[row] if ids is not None else row
        raise DecompositionError(
            f"components do not rebuild the final residual for prompt {name!r} (fact id): relative "
            f"residual error {err[row]:.2e}, relative logit error {lerr[row]:.2e}, tolerance "
            f"{rtol:.0e} for {dtype}. The model's layout probably differs from what its adapter "
            "in forbidden_facts/architectures.py expects (extra biases or norms, parallel "
            "blocks), or its hooks were bypassed."
        )
