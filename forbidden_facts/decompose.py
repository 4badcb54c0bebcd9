"""Split the final-position residual stream into the paper's components.

Before the final norm, the last token's residual stream is exactly

    EMBED + sum_l ( sum_h L{l}H{h}ATN + L{l}MLP ),

where a head's term is its slice of the input of ``o_proj`` times the matching
columns of ``o_proj``'s weight. The components are captured with hooks (removed
in a ``finally``) and checked against the model's own residual and logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .components import component_labels, parse_label  # noqa: F401 (re-exported)
from .modeling import Batch, input_device


class DecompositionError(RuntimeError):
    """The components do not rebuild the model's residual stream or logits."""


# Relative tolerance of the rebuilt residual, by the dtype the model runs in.
RESID_RTOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def _layers(model):
    return model.model.layers


def model_shape(model) -> tuple[int, int, int]:
    """(n_layers, n_heads, d_head) of a Llama-family model."""
    cfg = model.config
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, cfg.num_attention_heads, d_head


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
    store: dict = {"z": {}, "mlp": {}}
    handles = []
    # Each hook clones the last position: a view (``out[:, -1]``) would keep the
    # layer's whole batch x pos x d_model tensor alive until the forward pass ends,
    # 2 per layer (for Llama-2-7b at 24 prompts of 120 tokens, 1.5 GB in float16).

    def embed_hook(_mod, _inp, out):
        store["embed"] = out[:, -1].clone()

    def o_proj_pre(layer):
        def hook(_mod, args):
            store["z"][layer] = args[0][:, -1].clone()

        return hook

    def mlp_hook(layer):
        def hook(_mod, _inp, out):
            store["mlp"][layer] = out[:, -1].clone()

        return hook

    def norm_pre(_mod, args):
        store["resid"] = args[0][:, -1].clone()

    try:
        handles.append(model.get_input_embeddings().register_forward_hook(embed_hook))
        for i, layer in enumerate(_layers(model)):
            if layer.self_attn.o_proj.bias is not None:
                raise DecompositionError(
                    "o_proj has a bias; the per-head decomposition assumes Llama's bias-free o_proj"
                )
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(o_proj_pre(i)))
            handles.append(layer.mlp.register_forward_hook(mlp_hook(i)))
        handles.append(model.model.norm.register_forward_pre_hook(norm_pre))
        yield store
    finally:
        for h in handles:
            h.remove()


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
        model: A Llama-family causal LM.
        batch: Left-padded prompts (the final position is -1 in every row).
        check: Verify that the components rebuild the residual and the logits.
        ids: Names of the rows (fact ids) used in error messages.

    Returns:
        A Decomposition; components are float32 on the final norm's device.
    """
    n_layers, n_heads, _ = model_shape(model)
    with _capture(model) as store:
        out = model(**batch.to(input_device(model)).as_kwargs(), logits_to_keep=1, use_cache=False)
    device = model.model.norm.weight.device
    parts = [store["embed"].to(device, torch.float32)[:, None]]
    for i, layer in enumerate(_layers(model)):
        w_o = layer.self_attn.o_proj.weight
        heads = head_outputs(store["z"][i], w_o, n_heads)
        parts.append(heads.to(device, torch.float32))
        parts.append(store["mlp"][i].to(device, torch.float32)[:, None])
    components = torch.cat(parts, dim=1)
    resid = store["resid"].to(device, torch.float32)
    logits = out.logits[:, -1].to(device, torch.float32)
    decomp = Decomposition(components, component_labels(n_layers, n_heads), resid, logits)
    if check:
        check_decomposition(model, decomp, ids)
    return decomp


def norm_unembed(model, resid: Float[Tensor, "row d_model"]) -> Float[Tensor, "row d_vocab"]:
    """Final RMSNorm then lm_head, in the model's dtype, returned as float32."""
    norm = model.model.norm
    head = model.lm_head
    x = resid.to(norm.weight.device, norm.weight.dtype)
    x = norm(x).to(head.weight.device)
    return head(x).float()


# Final norms that compute weight * x * rsqrt(mean(x^2) + eps) (x upcast to float32).
_PLAIN_RMS_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"}


def rms_linear(model) -> bool:
    """Whether final norm + lm_head is linear up to a scale per row.

    With Llama's RMSNorm and a bias-free lm_head,

        norm_unembed(x) = unembed_unnormed(x) * inv_rms(x),

    so the unembedding of ``x + d`` is ``unembed_unnormed(x) + unembed_unnormed(d)``
    rescaled: patched rows that share a base residual need only their
    differences unembedded, and a difference and its negative share one matmul.
    False for any other norm (callers then unembed every row directly).
    """
    norm, head = model.model.norm, model.lm_head
    return type(norm).__name__ in _PLAIN_RMS_NORMS and getattr(head, "bias", None) is None


def inv_rms(model, x: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows"]:
    """1 / rms of residual rows as the final RMSNorm computes it (float32)."""
    norm = model.model.norm
    x = x.to(norm.weight.device, norm.weight.dtype).float()
    return torch.rsqrt(x.pow(2).mean(-1) + norm.variance_epsilon)


def unembed_unnormed(
    model, x: Float[Tensor, "row d_model"], out: Float[Tensor, "row d_vocab"] | None = None
) -> Float[Tensor, "row d_vocab"]:
    """lm_head(gain * x) without the 1/rms factor, in the model's dtype, as float32.

    Args:
        model: The causal LM.
        x: Residual rows.
        out: A float32 buffer to write into (reused across chunks, which on CPU saves
            mapping and zeroing fresh pages for every chunk); None: a new tensor.
    """
    norm, head = model.model.norm, model.lm_head
    x = (x.to(norm.weight.device, norm.weight.dtype) * norm.weight).to(head.weight.device)
    if out is None:
        return torch.nn.functional.linear(x, head.weight).float()
    if head.weight.dtype == out.dtype:
        return torch.mm(x, head.weight.t(), out=out)
    return out.copy_(torch.nn.functional.linear(x, head.weight))


def check_decomposition(model, decomp: Decomposition, ids=None) -> None:
    """Fail loudly, naming the row, if the components do not rebuild residual and logits."""
    dtype = model.model.norm.weight.dtype
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
            f"{rtol:.0e} for {dtype}. The model is probably not a standard LlamaForCausalLM "
            "(extra biases, parallel blocks) or its hooks were bypassed."
        )
