"""The decomposition: components rebuild the residual and logits, batched equals single."""

import pytest
import torch

from forbidden_facts.decompose import (
    DecompositionError,
    component_labels,
    decompose,
    norm_unembed,
    parse_label,
)
from forbidden_facts.modeling import pad_left

SEQS = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1, 12, 13, 14]]


def test_labels_follow_the_paper_naming():
    labels = component_labels(32, 32)
    assert len(labels) == 1057  # Llama-2-7b: 1 + 32*32 + 32
    assert labels[0] == "EMBED" and labels[1] == "L0H0ATN" and labels[33] == "L0MLP"
    assert parse_label("L18H9ATN") == ("head", 18, 9)
    assert parse_label("L3MLP") == ("mlp", 3, None)
    assert parse_label("EMBED") == ("embed", None, None)


def test_components_sum_to_residual_and_logits(model):
    with torch.no_grad():
        dec = decompose(model, pad_left(SEQS, 0))
    assert dec.components.shape == (3, 1 + 2 * 4 + 2, 32)
    torch.testing.assert_close(dec.components.sum(1), dec.resid, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        own = model(input_ids=torch.tensor([SEQS[1]])).logits[0, -1]
    torch.testing.assert_close(
        norm_unembed(model, dec.components.sum(1))[1], own, rtol=1e-4, atol=1e-4
    )


def test_batched_equals_single(model):
    with torch.no_grad():
        batched = decompose(model, pad_left(SEQS, 0))
        for i, seq in enumerate(SEQS):
            single = decompose(model, pad_left([seq], 0))
            torch.testing.assert_close(
                single.components[0], batched.components[i], rtol=1e-5, atol=1e-6
            )


def test_mha_and_gqa_agree_on_the_same_weights():
    """A GQA model equals the MHA model whose KV heads are repeated."""
    from tests.conftest import tiny_llama

    gqa = tiny_llama(2, seed=3)
    mha = tiny_llama(4, seed=3)
    with torch.no_grad():
        mha.load_state_dict(
            {k: v for k, v in gqa.state_dict().items() if "k_proj" not in k and "v_proj" not in k},
            strict=False,
        )
        for lg, lm in zip(gqa.model.layers, mha.model.layers, strict=True):
            for name in ("k_proj", "v_proj"):
                w = getattr(lg.self_attn, name).weight.reshape(2, 8, 32)
                getattr(lm.self_attn, name).weight.copy_(
                    w.repeat_interleave(2, dim=0).reshape(32, 32)
                )
        a = decompose(gqa, pad_left(SEQS, 0))
        b = decompose(mha, pad_left(SEQS, 0))
    torch.testing.assert_close(a.components, b.components, rtol=1e-5, atol=1e-6)


def test_a_model_that_breaks_the_decomposition_fails_loudly(model):
    # A bias on o_proj is not part of any component: the check must refuse.
    layer = model.model.layers[0].self_attn
    original = layer.o_proj
    biased = torch.nn.Linear(original.in_features, original.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(original.weight)
        biased.bias.fill_(0.5)
    layer.o_proj = biased
    try:
        with pytest.raises(DecompositionError, match="bias"):
            decompose(model, pad_left(SEQS, 0))
    finally:
        layer.o_proj = original
    # Hooks are removed even when the check fails.
    assert not model.model.layers[0].self_attn.o_proj._forward_pre_hooks


def test_captured_activations_hold_only_the_last_position(model):
    """Memory of the hooks: what they keep per layer does not grow with the prompt length.

    A view of the last position would keep each layer's whole batch x pos x d_model
    tensor alive until the forward pass ends (1.5 GB for Llama-2-7b in float16 at 24
    prompts of 120 tokens).
    """
    from forbidden_facts.decompose import _capture

    long = [[1] + list(range(2, 40))] * 2
    with torch.no_grad(), _capture(model) as store:
        model(**pad_left(long, 0).as_kwargs(), logits_to_keep=1, use_cache=False)
    d_model = model.config.hidden_size
    captured = [store["embed"], store["resid"], *store["z"].values(), *store["mlp"].values()]
    for t in captured:
        assert t.untyped_storage().nbytes() == 2 * d_model * t.element_size()
