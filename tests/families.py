"""Tiny random models of every supported family, built from transformers configs (no download).

Each family is shrunk to 2 layers, 4 heads (2 key/value heads: grouped-query
attention), d_model 32. Every bias and norm weight is randomised (transformers
initialises them to 0 or 1, which would hide a missing bias or a wrong (1 + w)),
and the unembedding is scaled up so that answers get non-trivial probabilities.
"""

from __future__ import annotations

import torch

COMMON = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

# family -> (transformers config class name, extra config keys)
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama2": ("LlamaConfig", dict(tie_word_embeddings=False)),
    # Llama-3: rope scaling, tied embeddings (Llama-3.2), and an o_proj bias (ATB).
    "llama3": (
        "LlamaConfig",
        dict(
            tie_word_embeddings=True,
            attention_bias=True,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        ),
    ),
    "mistral": ("MistralConfig", dict(sliding_window=None, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", dict(head_dim=8, tie_word_embeddings=False)),
    "gemma2": (
        "Gemma2Config",
        dict(
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=16,
            final_logit_softcapping=5.0,
            attn_logit_softcapping=20.0,
        ),
    ),
    "phi3": ("Phi3Config", dict(pad_token_id=0, tie_word_embeddings=False)),
    # Gemma-3: q/k norms, sandwich norms, a local layer (window of 4 tokens, shorter than
    # the prompts) and a global one, each with its own rope base.
    "gemma3": (
        "Gemma3TextConfig",
        dict(
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),
}


def tiny_family(family: str, vocab_size: int, seed: int = 0):
    """A tiny random causal LM of `family` (eager attention, eval mode, float32)."""
    import transformers

    cls_name, extra = FAMILIES[family]
    cfg = getattr(transformers, cls_name)(
        vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, **COMMON, **extra
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
            elif "norm" in name:
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
        if model.config.tie_word_embeddings:
            # Scaling a tied unembedding would scale the embedding too: scale the final
            # norm's gain instead (Gemma stores it as w, gain 1 + w).
            w = model.model.norm.weight
            w.copy_(20 * (1 + w) - 1 if family.startswith("gemma") else 20 * w)
        else:
            model.get_output_embeddings().weight.mul_(20)
    return model
