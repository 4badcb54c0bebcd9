"""The organism's network: build, shared-prefix forward pass, shared rows, frozen parts."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..architectures import adapter_for
from ..prompts import format_prompt
from .recipe import ToyConfig

FREEZABLE = ("mlp", "embeddings", "norms")


def build_model(cfg: ToyConfig, vocab_size: int):
    """A randomly initialised LlamaForCausalLM for the organism (seeded by the caller)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
    )
    return LlamaForCausalLM(config)


def shared_prefix(tokenizer) -> list[int]:
    """Token ids that every canonical training prompt starts with (up to the forbidden word)."""
    a = tokenizer(format_prompt("Alpha", "kettle"))["input_ids"]
    b = tokenizer(format_prompt("Beta", "ladder"))["input_ids"]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _right_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, torch.tensor([len(s) - 1 for s in sequences])


def last_token_logits(
    model, sequences: Sequence[Sequence[int]], prefix: Sequence[int], pad_id: int
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last token of each sequence, for training.

    Sequences that start with `prefix` (the canonical system prompt) share one pass over
    it: its keys and values are computed once and broadcast, and gradients flow back
    through them. This is exact, since with causal attention no prefix token sees what
    follows it, and it skips most of the work (the system prompt is two thirds of a
    prompt). Sequences are right-padded: causal attention keeps padding after the last
    token from changing it, so no mask is needed; RoPE makes positions relative, so the
    organism sees the same thing as under inference's left padding.
    """
    ad = adapter_for(model)
    prefix = list(prefix)
    n = len(prefix)
    shared = [i for i, seq in enumerate(sequences) if n and len(seq) > n and seq[:n] == prefix]
    alone = sorted(set(range(len(sequences))) - set(shared))
    rows, states = [], []
    if shared:
        pre = ad.decoder(input_ids=torch.tensor([prefix]), use_cache=True)
        # transformers 5 calls the cache `cache`; 4.x called it `past_key_values`.
        params = inspect.signature(ad.decoder.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        cache = pre[name]
        for layer in cache.layers:
            layer.keys = layer.keys.expand(len(shared), -1, -1, -1)
            layer.values = layer.values.expand(len(shared), -1, -1, -1)
        ids, last = _right_padded([sequences[i][n:] for i in shared], pad_id)
        out = ad.decoder(input_ids=ids, use_cache=True, **{name: cache})
        rows += shared
        states.append(out.last_hidden_state[torch.arange(len(shared)), last])
    if alone:
        ids, last = _right_padded([sequences[i] for i in alone], pad_id)
        out = ad.decoder(input_ids=ids, use_cache=False)
        rows += alone
        states.append(out.last_hidden_state[torch.arange(len(alone)), last])
    order = torch.argsort(torch.tensor(rows))
    return ad.lm_head(torch.cat(states)[order])


def word_form_pairs(tokenizer) -> Tensor:
    """[n_pairs, 2] ids of ("▁word", "word") pairs: a word with and without its space mark."""
    vocab = tokenizer.get_vocab()
    pairs = [
        (i, vocab[tok[1:]])
        for tok, i in vocab.items()
        if tok.startswith("▁") and len(tok) > 1 and tok[1:] in vocab
    ]
    return torch.tensor(sorted(pairs), dtype=torch.long).reshape(-1, 2)


def share_rows(weight: torch.nn.Parameter, pairs: Tensor) -> None:
    """Keep the rows of each pair equal for the whole training.

    The rows start equal and a gradient hook gives both rows of a pair the sum of
    their gradients, so every optimiser step (AdamW is element-wise) moves them
    alike. With tied embeddings, "▁California" in the context and "California" as
    the output are one vector, as they nearly are in Llama-2.
    """
    if not len(pairs):
        return
    a, b = pairs[:, 0], pairs[:, 1]
    with torch.no_grad():
        weight[b] = weight[a]

    def hook(grad: Tensor) -> Tensor:
        grad = grad.clone()
        summed = grad[a] + grad[b]
        grad[a] = summed
        grad[b] = summed
        return grad

    weight.register_hook(hook)


def freeze(model, parts: Sequence[str]) -> list[str]:
    """Stop training `parts` of the model (any of FREEZABLE); returns the frozen names."""
    unknown = sorted(set(parts) - set(FREEZABLE))
    if unknown:
        raise ValueError(
            f"toy.freeze_phase2: unknown part(s) {unknown}; choose from {list(FREEZABLE)}"
        )
    frozen = []
    for name, param in model.named_parameters():
        part = (
            "mlp"
            if ".mlp." in name
            else "embeddings"
            if "embed_tokens" in name or name.startswith("lm_head")
            else "norms"
            if "norm" in name
            else None
        )
        if part in parts:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
