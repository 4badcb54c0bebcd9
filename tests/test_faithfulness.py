"""Patching with recomputation: the identities a researcher checks, on every family.

Tiny random models of each family the adapter supports (tests/families.py), float32.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from forbidden_facts.decompose import decompose, model_labels, norm_unembed
from forbidden_facts.faithfulness import (
    patch_mask,
    recompute,
    recomputed_logodds,
    variants,
    writes,
)
from forbidden_facts.metrics import VocabIndex, answer_logodds
from forbidden_facts.modeling import encode
from forbidden_facts.patching import wide_prompts
from tests.families import FAMILIES, tiny_family

TOL = 1e-5


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request, tokenizer):
    return tiny_family(request.param, vocab_size=len(tokenizer), seed=2)


@pytest.fixture(scope="module")
def pair(family_model, tokenizer, prompts):
    """c and nc0 prompts of every fact, the c prompts' writes and the answer masks."""
    facts = wide_prompts(prompts)
    c = encode(tokenizer, list(facts["prompt_c"]))
    nc = encode(tokenizer, list(facts["prompt_nc0"]))
    with torch.no_grad():
        source = writes(family_model, c)
    mask = VocabIndex(tokenizer).answer_mask(list(facts["answer"]), source.logits.shape[-1])
    return c, nc, source, mask


def _lo(model, batch, mask):
    with torch.no_grad():
        logits = model(**batch.as_kwargs(), use_cache=False).logits[:, -1]
    return answer_logodds(logits, mask)


def _run(model, pair, sets, cached=True, row_batch=5):
    c, nc, source, mask = pair
    labels = model_labels(model)
    n = len(nc.input_ids)
    fact = torch.arange(n).repeat_interleave(len(sets))
    patch = patch_mask(labels, sets).repeat(n, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        lo = recomputed_logodds(model, nc, source, mask, fact, patch, row_batch, cached)
    return lo.view(n, len(sets))


def test_patching_every_component_reproduces_the_c_prompt(family_model, pair):
    c, _nc, _source, mask = pair
    lo = _run(family_model, pair, [model_labels(family_model)])[:, 0]
    torch.testing.assert_close(lo, _lo(family_model, c, mask), rtol=0, atol=TOL)


def test_patching_nothing_gives_the_nc_prompt(family_model, pair):
    _c, nc, _source, mask = pair
    lo = _run(family_model, pair, [[]])[:, 0]
    torch.testing.assert_close(lo, _lo(family_model, nc, mask), rtol=0, atol=TOL)


def test_cached_path_equals_full_forward_passes(family_model, pair):
    labels = model_labels(family_model)
    gen = np.random.default_rng(0)
    sets = [["L0H1ATN"], ["EMBED"], ["L0MLP", "L1H3ATN"], ["L1H0ATN"]]
    sets += [list(gen.choice(labels, size=k, replace=False)) for k in (3, 5, 8)]
    cached = _run(family_model, pair, sets, cached=True, row_batch=4)
    full = _run(family_model, pair, sets, cached=False, row_batch=7)
    torch.testing.assert_close(cached, full, rtol=0, atol=TOL)
    # The patches move the answer's log-odds: the comparison is not between two no-ops.
    assert (cached - _run(family_model, pair, [[]])).abs().max() > 1e-3


def _direct(model, pair, labels, c=None):
    """First-order effect: the c values of `labels` put into nc's final residual together."""
    c = pair[0] if c is None else c
    _c, nc, _source, mask = pair
    with torch.no_grad():
        dc, dn = decompose(model, c), decompose(model, nc)
    i = [dc.labels.index(label) for label in labels]
    resid = dn.resid + (dc.components[:, i] - dn.components[:, i]).sum(1)
    return answer_logodds(norm_unembed(model, resid), mask) - answer_logodds(dn.logits, mask)


def test_last_mlp_has_total_equal_to_direct(family_model, pair):
    last = f"L{family_model.config.num_hidden_layers - 1}MLP"
    lo = _run(family_model, pair, [[], [last]])
    torch.testing.assert_close(
        lo[:, 1] - lo[:, 0], _direct(family_model, pair, [last]), atol=TOL, rtol=0
    )


def _first_layer_out(model, batch):
    """The first decoder layer's output at the last position, hooked on the family's own module."""
    store = {}

    def keep(_mod, _inp, out):
        store["h"] = (out[0] if isinstance(out, tuple) else out)[:, -1].clone()

    handle = model.model.layers[0].register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(**batch.as_kwargs(), use_cache=False)
    finally:
        handle.remove()
    return store["h"]


def test_first_layer_patched_equals_its_residual_patched(family_model, pair):
    # Patching every write of layer 0 (and the embedding) makes the residual after layer
    # 0 at the last position the c prompt's; the reference puts that residual in by hand
    # at the decoder layer's output (a hook point the library never uses) and runs the
    # model on: every later layer must be recomputed for the two to agree.
    c, nc, _source, mask = pair
    first = [lbl for lbl in model_labels(family_model) if lbl == "EMBED" or lbl.startswith("L0")]
    lo = _run(family_model, pair, [first])[:, 0]
    h_c = _first_layer_out(family_model, c)

    def put(_mod, _inp, out):
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = hidden.clone()
        hidden[:, -1] = h_c
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = family_model.model.layers[0].register_forward_hook(put)
    try:
        ref = _lo(family_model, nc, mask)
    finally:
        handle.remove()
    torch.testing.assert_close(lo, ref, rtol=0, atol=TOL)
    # And that differs from the first-order effect of the same writes.
    assert (lo - _lo(family_model, nc, mask) - _direct(family_model, pair, first)).abs().max() > TOL


def test_recompute_tables_the_variants(tokenizer, prompts):
    model = tiny_family("llama2", vocab_size=len(tokenizer), seed=2)
    top = ["L1MLP", "L0H1ATN", "L1H2ATN"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = recompute(model, tokenizer, prompts, top, batch_size=2, row_batch=8, progress=False)
    n_facts = prompts["fact_id"].nunique()
    assert out.single.shape == out.top_k.shape == out.rest_k.shape == (2 * n_facts, 3)
    assert sorted(set(out.pairs)) == ["nc0", "nc1"]
    # One component alone is the first step of the cumulative patch.
    np.testing.assert_allclose(out.top_k[:, 0], out.single[:, 0], atol=1e-12)
    # Every component reproduces c; the top-k plus the rest is every component's effect.
    np.testing.assert_allclose(out.logodds_all, out.logodds_c, atol=TOL)
    assert np.abs(out.total).max() > 1e-3


def test_variants_and_masks_name_their_components():
    labels = ["EMBED", "L0H0ATN", "L0H1ATN", "L0MLP"]
    var = variants(labels, ["L0MLP", "EMBED"])
    rows = var.mask.tolist()
    assert rows[0] == [False] * 4 and rows[1] == [True] * 4
    assert rows[var.part("single").start] == [False, False, False, True]
    assert rows[var.part("top_k").stop - 1] == [True, False, False, True]
    assert rows[var.part("rest_k").start] == [True, True, True, False]
    with pytest.raises(ValueError, match="not components of this model"):
        patch_mask(labels, [["L9MLP"]])
