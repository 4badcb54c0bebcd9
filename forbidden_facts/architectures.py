"""Model adapters: the only code that knows a model family's Hugging Face internals.

Everything else (decomposition, patching, heads, attacks) asks an adapter for what
it needs: the embedding and its scale, each layer's attention weights and biases as
(views of) tensors, the head counts, the layer's input norm as a pure function, the
module whose input is the attention's per-head output (``o_proj``), the module whose
output is the MLP's write into the residual, the final norm, the unembedding and a
final-logit soft-cap. A family is one small class here, registered under its
``model_type`` (config.json) in `ADAPTERS`.

What a component is, per family (docs/science.md § Architectures):

* Llama, Mistral, Qwen2, Qwen3, Phi-3: ``EMBED``, every head's slice of ``o_proj``'s
  input times its columns of ``o_proj``, every MLP's output; an ``o_proj`` bias (Llama
  or Qwen3 with ``attention_bias: true``) is its own component ``L{l}ATB``.
* Gemma: the embedding is multiplied by sqrt(d_model) (inside its embedding module)
  and every RMSNorm scales by (1 + w).
* Gemma-2: as Gemma, plus an RMSNorm after attention and after the MLP. A head's
  component is its ``o_proj`` term times the post-attention norm's scale *of the
  unpatched prompt* (gain / rms of the whole attention output), so that the heads
  still sum to what the layer writes; the MLP's component is the post-feedforward
  norm's output. The final logits are soft-capped: cap * tanh(logits / cap).
* Gemma-3 (text, ``model_type`` ``gemma3_text``): Gemma-2's sandwich norms and
  embedding scale, plus RMSNorms on q and k (they only change attention patterns, not
  components), local (sliding-window) and global layers (only the patterns differ), and
  no soft-cap unless the config sets one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .norms import Norm

if TYPE_CHECKING:  # torch is imported where used: config checks read this file without it
    import torch
    from jaxtyping import Float
    from torch import Tensor

ADAPTER_FILE = "forbidden_facts/architectures.py"


class UnsupportedArchitecture(ValueError):
    """A model whose ``model_type`` has no adapter in `ADAPTERS`."""


class AdapterMismatch(RuntimeError):
    """A model whose modules do not have the layout its adapter expects."""


def _norm_eps(module) -> float:
    for name in ("variance_epsilon", "eps"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise AdapterMismatch(f"norm module {type(module).__name__} has no eps attribute")


def rms_norm_of(module, one_plus: bool = False) -> Norm:
    """A Norm from an RMSNorm module (``one_plus``: Gemma's weight is stored as w, gain 1 + w)."""
    w = module.weight.detach().float()
    return Norm("rms", 1.0 + w if one_plus else w, None, _norm_eps(module))


def layer_norm_of(module: torch.nn.LayerNorm) -> Norm:
    """A Norm from a torch LayerNorm (with or without bias)."""
    bias = None if module.bias is None else module.bias.detach().float()
    return Norm("layer", module.weight.detach().float(), bias, float(module.eps))


class LlamaAdapter:
    """Llama 2 and 3 (and every family with its layout: Mistral, Qwen2, Qwen3).

    Layout: ``model.model.embed_tokens``, ``model.model.layers[l]`` with
    ``self_attn.{q,k,v,o}_proj`` and ``input_layernorm``, ``mlp``, ``model.model.norm``
    and ``model.lm_head``.
    """

    family = "llama"
    # The config key that puts a bias on o_proj (None: the family never has one).
    o_bias_key: str | None = "attention_bias"
    one_plus_norm = False
    # Whether transformers can run the family with attn_implementation="sdpa".
    sdpa = True

    def __init__(self, model):
        self.model = model
        self.config = model.config

    # -- shape --------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)

    @property
    def d_head(self) -> int:
        cfg = self.config
        return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def d_vocab(self) -> int:
        return int(self.lm_head.weight.shape[0])

    @property
    def has_o_bias(self) -> bool:
        """Whether every layer's o_proj has a bias (then each layer has an ``L{l}ATB``)."""
        return bool(self.o_bias_key and getattr(self.config, self.o_bias_key, False))

    # -- modules ------------------------------------------------------------
    @property
    def embedding(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    @property
    def embed_scale(self) -> float:
        """What the embedding module multiplies the looked-up rows by (Gemma: sqrt(d_model))."""
        import torch

        scale = getattr(self.embedding, "embed_scale", None)
        if scale is None:
            return 1.0
        return float(torch.as_tensor(scale).to(self.embedding.weight.dtype))

    @property
    def decoder(self) -> torch.nn.Module:
        """The base model: embedding, layers and final norm, returning hidden states."""
        return self.model.model

    @property
    def layers(self) -> list[torch.nn.Module]:
        return list(self.model.model.layers)

    def attention(self, layer: int) -> torch.nn.Module:
        return self.model.model.layers[layer].self_attn

    def o_proj(self, layer: int) -> torch.nn.Module:
        """The module whose input is the concatenated per-head outputs (hook point)."""
        return self.attention(layer).o_proj

    def attn_post_norm_module(self, layer: int) -> torch.nn.Module | None:
        """A norm applied to the attention output before it joins the residual (Gemma-2)."""
        return None

    def mlp_out_module(self, layer: int) -> torch.nn.Module:
        """The module whose output is what the MLP adds to the residual (hook point)."""
        return self.model.model.layers[layer].mlp

    @property
    def final_norm_module(self) -> torch.nn.Module:
        return self.model.model.norm

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    # -- weights ------------------------------------------------------------
    def qkv(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """(W_Q [n_heads*d_head, d_model], W_K, W_V [n_kv*d_head, d_model]) as views."""
        attn = self.attention(layer)
        return attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight

    def qkv_bias(self, layer: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        attn = self.attention(layer)
        return attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias

    # -- attention pattern ----------------------------------------------------
    def q_norm_module(self, layer: int) -> torch.nn.Module | None:
        """A norm on each head's query before the rotary embedding (Qwen3), or None."""
        return None

    def attention_scale(self, layer: int) -> float:
        """What the layer multiplies q . k by (1/sqrt(d_head); Gemma-2: its query_pre_attn_scalar)."""
        return float(self.attention(layer).scaling)

    def attention_window(self, layer: int) -> int | None:
        """The layer's sliding window (a query sees the keys of its last `window` positions), or None.

        Qwen2, Qwen3 and Gemma-2 put it on the attention module of each sliding layer
        (None on the others); Mistral and Phi-3 take the config's in every layer.
        """
        attn = self.attention(layer)
        if hasattr(attn, "sliding_window"):
            return attn.sliding_window
        return getattr(self.config, "sliding_window", None)

    @property
    def attn_logit_softcap(self) -> float | None:
        """A soft-cap on the attention logits, cap * tanh(scores / cap) (Gemma-2), or None."""
        return None

    def queries(
        self,
        layer: int,
        hidden: Float[Tensor, "batch pos d_model"],
        position_embeddings: tuple[Tensor, Tensor],
    ) -> Float[Tensor, "batch n_heads pos d_head"]:
        """The layer's queries of `hidden` (the attention's input) as its attention makes them.

        The projection with its bias, the family's per-head query norm and the rotary
        embedding (the family's own ``apply_rotary_pos_emb``, partial rotary included) of
        the positions whose ``(cos, sin)`` the decoder hands the attention module.
        """
        import sys

        import torch.nn.functional as F

        attn = self.attention(layer)
        rotary = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
        if rotary is None:
            raise AdapterMismatch(
                f"{type(attn).__module__} has no apply_rotary_pos_emb: the {self.family} adapter "
                f"in {ADAPTER_FILE} cannot rebuild its queries"
            )
        q = F.linear(hidden, self.qkv(layer)[0], self.qkv_bias(layer)[0])
        q = q.unflatten(-1, (self.n_heads, self.d_head))
        norm = self.q_norm_module(layer)
        if norm is not None:
            q = norm(q)
        q = q.transpose(1, 2)
        cos, sin = position_embeddings
        return rotary(q, q, cos, sin)[0]

    def last_position_pattern(
        self,
        layer: int,
        query: Float[Tensor, "batch n_heads d_head"],
        keys: Float[Tensor, "batch n_kv_heads key_pos d_head"],
        heads: list[int],
    ) -> Float[Tensor, "batch head key_pos"]:
        """Attention of `heads` from the last position onto every key, in float32.

        `keys` are the layer's keys as its attention uses them (after norm and rotary),
        the last one at the query's position; a head reads key head ``h // (n_heads /
        n_kv_heads)`` (grouped-query attention). The scale, the soft-cap and the sliding
        window are the layer's.
        """
        import torch

        kv = torch.as_tensor(heads) // (self.n_heads // self.n_kv_heads)
        q = query[:, heads].float()
        k = keys[:, kv.to(keys.device)].float()
        scores = torch.einsum("bhd,bhkd->bhk", q, k) * self.attention_scale(layer)
        cap = self.attn_logit_softcap
        if cap is not None:
            scores = torch.tanh(scores / cap) * cap
        window = self.attention_window(layer)
        n_keys = scores.shape[-1]
        if window is not None and n_keys > window:
            scores[..., : n_keys - window] = float("-inf")
        return torch.softmax(scores, dim=-1)

    def w_o(self, layer: int) -> Float[Tensor, "d_model n_heads_x_d_head"]:
        return self.o_proj(layer).weight

    def b_o(self, layer: int) -> Float[Tensor, " d_model"] | None:
        return self.o_proj(layer).bias

    def _norm(self, module) -> Norm:
        import torch

        if isinstance(module, torch.nn.LayerNorm):
            return layer_norm_of(module)
        return rms_norm_of(module, one_plus=self.one_plus_norm)

    def input_norm(self, layer: int) -> Norm:
        """The norm in front of the layer's attention."""
        return self._norm(self.model.model.layers[layer].input_layernorm)

    def attn_post_norm(self, layer: int) -> Norm | None:
        module = self.attn_post_norm_module(layer)
        return None if module is None else self._norm(module)

    @property
    def final_norm(self) -> Norm:
        return self._norm(self.final_norm_module)

    @property
    def unembed_bias(self) -> Tensor | None:
        return getattr(self.lm_head, "bias", None)

    @property
    def logit_softcap(self) -> float | None:
        return None

    def check_layout(self) -> None:
        """Fail if a layer's o_proj bias does not match the config (the labels depend on it)."""
        for i in range(self.n_layers):
            has = self.b_o(i) is not None
            if has != self.has_o_bias:
                raise AdapterMismatch(
                    f"layer {i}'s o_proj {'has' if has else 'lacks'} a bias but the config "
                    f"({self.o_bias_key}={getattr(self.config, self.o_bias_key or '', None)}) "
                    f"says {'it has' if self.has_o_bias else 'none'}: the {self.family} adapter "
                    f"in {ADAPTER_FILE} labels an o_proj bias ATB only where the config puts one"
                )


class MistralAdapter(LlamaAdapter):
    family = "mistral"
    o_bias_key = None


class Qwen2Adapter(LlamaAdapter):
    """Qwen2: q/k/v have biases (part of each head's output), o_proj never has one."""

    family = "qwen2"
    o_bias_key = None


class Qwen3Adapter(LlamaAdapter):
    """Qwen3: RMSNorms on q and k (they only change attention patterns, not components)."""

    family = "qwen3"

    def q_norm_module(self, layer: int) -> torch.nn.Module:
        return self.attention(layer).q_norm


class Phi3Adapter(LlamaAdapter):
    """Phi-3: q, k and v fused in ``qkv_proj`` (rows q, then k, then v); gate/up fused."""

    family = "phi3"
    o_bias_key = None

    def qkv(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        w = self.attention(layer).qkv_proj.weight
        q = self.n_heads * self.d_head
        kv = self.n_kv_heads * self.d_head
        return w[:q], w[q : q + kv], w[q + kv : q + 2 * kv]

    def qkv_bias(self, layer: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        b = self.attention(layer).qkv_proj.bias
        if b is None:
            return None, None, None
        q = self.n_heads * self.d_head
        kv = self.n_kv_heads * self.d_head
        return b[:q], b[q : q + kv], b[q + kv : q + 2 * kv]


class GemmaAdapter(LlamaAdapter):
    """Gemma: embedding times sqrt(d_model) (in the embedding module), (1 + w) RMSNorms."""

    family = "gemma"
    one_plus_norm = True


class Gemma2Adapter(GemmaAdapter):
    """Gemma-2: Gemma plus sandwich norms around attention and MLP, final-logit soft-cap."""

    family = "gemma2"
    # transformers runs its soft-capped attention logits only with eager attention.
    sdpa = False

    def attn_post_norm_module(self, layer: int) -> torch.nn.Module:
        return self.model.model.layers[layer].post_attention_layernorm

    def mlp_out_module(self, layer: int) -> torch.nn.Module:
        # The MLP's write into the residual is the post-feedforward norm's output.
        return self.model.model.layers[layer].post_feedforward_layernorm

    @property
    def logit_softcap(self) -> float | None:
        cap = getattr(self.config, "final_logit_softcapping", None)
        return None if cap is None else float(cap)

    @property
    def attn_logit_softcap(self) -> float | None:
        cap = getattr(self.config, "attn_logit_softcapping", None)
        return None if cap is None else float(cap)


class Gemma3Adapter(Gemma2Adapter):
    """Gemma-3 (text): Gemma-2's layout with q/k norms; local and global attention layers.

    The q/k norms and the sliding window act inside attention, before the heads' outputs
    that the components are made of, so the components are Gemma-2's. Gemma-3 has no
    attention soft-cap, so transformers runs it with sdpa.
    """

    family = "gemma3"
    sdpa = True

    def q_norm_module(self, layer: int) -> torch.nn.Module:
        return self.attention(layer).q_norm


ADAPTERS: dict[str, type[LlamaAdapter]] = {
    "llama": LlamaAdapter,
    "mistral": MistralAdapter,
    "qwen2": Qwen2Adapter,
    "qwen3": Qwen3Adapter,
    "phi3": Phi3Adapter,
    "gemma": GemmaAdapter,
    "gemma2": Gemma2Adapter,
    # Gemma3ForCausalLM (text only, e.g. Gemma-3-270M and 1B); the multimodal model_type
    # "gemma3" nests its language model elsewhere and has no adapter.
    "gemma3_text": Gemma3Adapter,
}


def unsupported_message(model_type: str | None, where: str) -> str:
    """The error text for a model without an adapter."""
    return (
        f"{where} has model_type {model_type!r}, which has no model adapter; supported "
        f"model types: {', '.join(sorted(ADAPTERS))}. Use a model of a supported family, or "
        f"add an adapter class for {model_type!r} to {ADAPTER_FILE} and register it in "
        "ADAPTERS (docs/science.md § Architectures says what a component must be)."
    )


def check_model_type(model_type: str | None, where: str = "the model") -> None:
    """Raise UnsupportedArchitecture unless `model_type` has an adapter."""
    if model_type not in ADAPTERS:
        raise UnsupportedArchitecture(unsupported_message(model_type, where))


def attention_implementation(model_type: str | None, wanted: str) -> str:
    """`wanted`, or "eager" where the family cannot run "sdpa" (Gemma-2)."""
    adapter = ADAPTERS.get(model_type)
    if wanted == "sdpa" and adapter is not None and not adapter.sdpa:
        return "eager"
    return wanted


def adapter_for(model) -> LlamaAdapter:
    """The adapter of a loaded model, by its ``config.model_type``."""
    model_type = getattr(model.config, "model_type", None)
    check_model_type(model_type, f"model {type(model).__name__}")
    return ADAPTERS[model_type](model)
