"""Every supported family through decomposition, patching, heads and the attack.

Each family is a tiny random model (tests/families.py). The checks are against an
independent recomputation written here from the family's own modules, not
through forbidden_facts.architectures: which module is hooked where is spelled out
per family below, so a wrong adapter disagrees with it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from forbidden_facts.architectures import ADAPTERS, UnsupportedArchitecture, adapter_for
from forbidden_facts.attack import self_insertion
from forbidden_facts.decompose import decompose, norm_unembed
from forbidden_facts.heads import forbidden_attention, last_position_attention, ov_scores
from forbidden_facts.metrics import VocabIndex, answer_logodds
from forbidden_facts.modeling import MIN_SHARED_TOKENS, encode, last_position_forward
from forbidden_facts.patching import attribute, cumulative_rows
from tests.families import FAMILIES, tiny_family

# Independent knowledge of each family: the module whose output is the MLP's write
# into the residual, and a norm between attention and the residual (or None).
MLP_WRITE = {f: "post_feedforward_layernorm" for f in ("gemma2", "gemma3")}
ATTN_POST_NORM = {f: "post_attention_layernorm" for f in ("gemma2", "gemma3")}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request, tokenizer):
    return request.param, tiny_family(request.param, vocab_size=len(tokenizer), seed=2)


def _decomp(model, tokenizer, prompts, fact_id, kind):
    row = prompts[(prompts.fact_id == fact_id) & (prompts.kind == kind)]
    return decompose(model, encode(tokenizer, list(row.prompt)))


def _prompt(prompts, fact_id, kind):
    return prompts[(prompts.fact_id == fact_id) & (prompts.kind == kind)].prompt.iloc[0]


def _capture_writes(family, model, input_ids):
    """What each part writes into the last position's residual, from the model's own modules."""
    store: dict = {}
    handles = []
    layers = model.model.layers

    def keep(key, pre=False):
        if pre:
            return lambda _m, args: store.__setitem__(key, args[0][0, -1].detach().clone())
        return lambda _m, _i, out: store.__setitem__(key, out[0, -1].detach().clone())

    handles.append(model.model.embed_tokens.register_forward_hook(keep("embed")))
    for i, layer in enumerate(layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(keep(f"z{i}", pre=True)))
        handles.append(layer.self_attn.o_proj.register_forward_hook(keep(f"o{i}")))
        post = ATTN_POST_NORM.get(family)
        if post:
            handles.append(getattr(layer, post).register_forward_hook(keep(f"post{i}")))
        handles.append(
            getattr(layer, MLP_WRITE.get(family, "mlp")).register_forward_hook(keep(f"mlp{i}"))
        )
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for h in handles:
            h.remove()
    return store


def _write(family, model, store, label):
    """One component's write, rebuilt from the captured activations (float64)."""
    if label == "EMBED":
        return store["embed"].double()
    layer = int(label[1:].split("H")[0].split("MLP")[0].split("ATB")[0])
    if label.endswith("MLP"):
        return store[f"mlp{layer}"].double()
    o_proj = model.model.layers[layer].self_attn.o_proj
    n_heads = model.config.num_attention_heads
    d_head = o_proj.weight.shape[1] // n_heads
    if label.endswith("ATB"):
        raw = o_proj.bias.double()
    else:
        h = int(label.split("H")[1][:-3])
        sl = slice(h * d_head, (h + 1) * d_head)
        raw = o_proj.weight.double()[:, sl] @ store[f"z{layer}"].double()[sl]
    if family in ATTN_POST_NORM:
        # The unpatched prompt's post-norm, elementwise: its output over its input.
        raw = raw * store[f"post{layer}"].double() / store[f"o{layer}"].double()
    return raw


def _brute_force_deltas(family, model, tokenizer, prompt_c, prompt_nc, labels, mask):
    """nc->c per label: the model's own final norm and unembedding on R_nc + r(c) - r(nc)."""
    ids_c = tokenizer(prompt_c, return_tensors="pt")["input_ids"]
    ids_nc = tokenizer(prompt_nc, return_tensors="pt")["input_ids"]
    store_c = _capture_writes(family, model, ids_c)
    store_nc = _capture_writes(family, model, ids_nc)
    with torch.no_grad():
        base = answer_logodds(model(input_ids=ids_nc).logits[:, -1], mask)
    out = {}
    for label in labels:
        shift = (
            _write(family, model, store_c, label) - _write(family, model, store_nc, label)
        ).float()

        def patch(_m, args, shift=shift):
            x = args[0].clone()
            x[0, -1] += shift
            return (x,)

        handle = model.model.norm.register_forward_pre_hook(patch)
        try:
            with torch.no_grad():
                patched = model(input_ids=ids_nc).logits[:, -1]
        finally:
            handle.remove()
        out[label] = float(answer_logodds(patched, mask) - base)
    return out


def test_every_family_has_an_adapter():
    for family in FAMILIES:
        assert tiny_family(family, vocab_size=32).config.model_type in ADAPTERS


def test_components_sum_to_the_residual_and_rebuild_the_logits(family_model, tokenizer, prompts):
    family, model = family_model
    with torch.no_grad():
        dec = _decomp(model, tokenizer, prompts, "f0", "c")
    ad = adapter_for(model)
    n_comp = 1 + 2 * (4 + ad.has_o_bias + 1)
    assert dec.components.shape[1] == n_comp == len(dec.labels)
    assert ("L0ATB" in dec.labels) == (family == "llama3")
    torch.testing.assert_close(dec.components.sum(1), dec.resid, rtol=1e-5, atol=1e-4)
    ids = tokenizer(_prompt(prompts, "f0", "c"), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        own = model(input_ids=ids).logits[0, -1]
    torch.testing.assert_close(
        norm_unembed(model, dec.components.sum(1))[0], own, rtol=1e-4, atol=1e-4
    )


def test_a_batch_runs_the_tokens_its_prompts_share_once_with_the_same_outputs(
    family_model, tokenizer, prompts
):
    # Every prompt starts with the system text up to the forbidden word: a batch runs it
    # once and each row's rest on its cache (modeling.last_position_forward). The logits,
    # the last position's attention and every component are those of the whole prompts.
    family, model = family_model
    texts = list(prompts.prompt.iloc[:6])
    batch = encode(tokenizer, texts)
    assert (batch.attention_mask == 0).any()  # rows of unequal length: padding in the middle
    with torch.no_grad():
        whole = model(**batch.as_kwargs(), output_attentions=True, use_cache=False)
        out, shared = last_position_forward(model, batch)
        attn, pad = last_position_attention(model, tokenizer, texts)
        together = decompose(model, batch).components
        alone = torch.cat([decompose(model, encode(tokenizer, [t])).components for t in texts])
    if family in ("gemma2", "gemma3"):
        # Their sliding windows (16 and 4 tokens, narrower than the prompts) would cut the
        # padded rest elsewhere: they run whole.
        assert shared == 0
    else:
        assert shared >= MIN_SHARED_TOKENS
    torch.testing.assert_close(out.logits[:, -1], whole.logits[:, -1], rtol=1e-5, atol=1e-5)
    expected = torch.stack([a[:, :, -1] for a in whole.attentions], dim=1)
    torch.testing.assert_close(attn, expected, rtol=1e-5, atol=1e-6)
    assert pad.tolist() == (batch.attention_mask == 0).sum(-1).tolist()
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_patching_every_component_gives_the_other_prompts_logits(family_model, tokenizer, prompts):
    _, model = family_model
    with torch.no_grad():
        c = _decomp(model, tokenizer, prompts, "f1", "c")
        nc = _decomp(model, tokenizer, prompts, "f1", "nc1")
        order = torch.arange(c.components.shape[1])
        rows = cumulative_rows(nc.resid, c.components, nc.components, order)
        torch.testing.assert_close(norm_unembed(model, rows[:, -1]), c.logits, rtol=1e-4, atol=1e-4)


def test_single_deltas_equal_a_brute_force_hooked_recomputation(family_model, tokenizer, prompts):
    family, model = family_model
    table = pd.concat(list(attribute(model, tokenizer, prompts, batch_size=5, progress=False)))
    vocab = VocabIndex(tokenizer)
    mask = vocab.answer_mask(["Paris"], len(tokenizer))
    got = table[(table.fact_id == "f2") & (table.pair == "nc0") & (table.direction == "nc_to_c")]
    got = got.set_index("component")["delta_logodds"]
    assert got.abs().max() > 1e-3  # the components matter (50x the tolerance)
    brute = _brute_force_deltas(
        family,
        model,
        tokenizer,
        _prompt(prompts, "f2", "c"),
        _prompt(prompts, "f2", "nc0"),
        list(got.index),
        mask,
    )
    for label, want in brute.items():
        assert abs(float(got[label]) - want) < 2e-5, (family, label, float(got[label]), want)


def _brute_force_ov(family, model, layer: int, head: int) -> float:
    """The OV score through the model's own modules: V x V logits, float32."""
    cfg = model.config
    blk = model.model.layers[layer]
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d_head = blk.self_attn.o_proj.weight.shape[1] // n_heads
    kv = head // (n_heads // n_kv)
    with torch.no_grad():
        ids = torch.arange(model.get_input_embeddings().weight.shape[0])
        x = blk.input_layernorm(model.model.embed_tokens(ids))
        if family == "phi3":
            v = blk.self_attn.qkv_proj(x)[:, (n_heads + n_kv) * d_head :]
        else:
            v = blk.self_attn.v_proj(x)
        v = v[:, kv * d_head : (kv + 1) * d_head]
        o = v @ blk.self_attn.o_proj.weight[:, head * d_head : (head + 1) * d_head].T
        if family in ATTN_POST_NORM:
            o = getattr(blk, ATTN_POST_NORM[family])(o)
        logits = model.lm_head(model.model.norm(o)).double()
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        p = torch.softmax(logits, -1)
        lo = (torch.log(p) - torch.log1p(-p)) / math.log(10)
    vocab = lo.shape[0]
    return float((lo.diagonal().mean() - lo.mean()) * vocab / (vocab - 1))


def test_ov_score_matches_the_model_own_modules(family_model):
    family, model = family_model
    scores = ov_scores(model, vocab_chunk=100, progress=False)
    assert scores.shape == (2, 4) and np.isfinite(scores).all()
    for layer, head in [(0, 1), (1, 2)]:
        want = _brute_force_ov(family, model, layer, head)
        assert abs(scores[layer, head] - want) < 2e-4 * max(1.0, abs(want)), (family, layer, head)


def test_forbidden_attention_and_the_attack_run(family_model, tokenizer, prompts):
    family, model = family_model
    table = forbidden_attention(model, tokenizer, prompts, batch_size=3, progress=False)
    # A local layer sees only the last `sliding_window` tokens: where the forbidden word is
    # further back in every prompt (Gemma-3's window of 4), it gets no attention there;
    # every global layer attends to it.
    from forbidden_facts.heads import forbidden_spans

    texts, words = list(prompts.prompt), list(prompts.forbidden_word)
    spans = forbidden_spans(tokenizer, texts, words)
    lengths = [len(tokenizer(t).input_ids) for t in texts]
    nearest = min(n - 1 - max(span) for n, span in zip(lengths, spans, strict=True))
    window = getattr(model.config, "sliding_window", None) or nearest + 1
    types = getattr(model.config, "layer_types", None) or ["full_attention"] * 2
    local = table.layer.map(lambda layer: types[layer] == "sliding_attention" and window <= nearest)
    assert local.any() == (family == "gemma3")
    for kind in ("c", "nc0", "nc1"):
        col = table[f"attn_forbidden_{kind}"]
        assert ((col[~local] > 0) & (col[~local] <= 1)).all()
        assert (col[local] == 0).all()
    nc1 = prompts[prompts.kind == "nc1"].reset_index(drop=True)
    per_fact, summary = self_insertion(model, tokenizer, nc1, ["apple", "kettle"], batch_size=4)
    assert len(per_fact) == 2 * len(nc1)  # attack and control per fact
    assert np.isfinite(per_fact.select_dtypes("number").to_numpy(dtype=float)).all()
    assert summary


def test_an_unknown_model_type_is_refused_with_the_file_to_edit():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16))
    with pytest.raises(UnsupportedArchitecture) as err:
        adapter_for(model)
    text = str(err.value)
    assert "'gpt2'" in text and "llama" in text and "forbidden_facts/architectures.py" in text
