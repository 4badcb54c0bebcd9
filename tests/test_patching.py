"""First-order and cumulative patching on tiny random models (MHA and GQA)."""

import numpy as np
import pandas as pd
import pytest
import torch

from forbidden_facts import patching, unembedding
from forbidden_facts.decompose import decompose, norm_unembed
from forbidden_facts.metrics import VocabIndex, answer_logodds
from forbidden_facts.modeling import encode
from forbidden_facts.patching import (
    attribute,
    cumulative,
    cumulative_rows,
    first_order_rows,
    shard_facts,
)
from forbidden_facts.unembedding import logodds_of_rows


def _decomp(model, tokenizer, prompts, fact_id, kind):
    row = prompts[(prompts.fact_id == fact_id) & (prompts.kind == kind)]
    return decompose(model, encode(tokenizer, list(row.prompt)))


def test_patching_every_component_turns_one_prompt_into_the_other(tok_model, tokenizer, prompts):
    with torch.no_grad():
        c = _decomp(tok_model, tokenizer, prompts, "f0", "c")
        nc = _decomp(tok_model, tokenizer, prompts, "f0", "nc1")
        order = torch.arange(c.components.shape[1])
        rows = cumulative_rows(nc.resid, c.components, nc.components, order)
        torch.testing.assert_close(
            norm_unembed(tok_model, rows[:, -1]), c.logits, rtol=1e-4, atol=1e-4
        )


def test_first_order_row_patches_exactly_one_component(tok_model, tokenizer, prompts):
    with torch.no_grad():
        c = _decomp(tok_model, tokenizer, prompts, "f1", "c")
        nc = _decomp(tok_model, tokenizer, prompts, "f1", "nc0")
        rows = first_order_rows(nc.resid, c.components, nc.components)
    i = 5
    expected = nc.components.sum(1) - nc.components[:, i] + c.components[:, i]
    torch.testing.assert_close(rows[:, i], expected, rtol=1e-5, atol=1e-5)


def test_attribution_matches_a_direct_computation(tok_model, tokenizer, prompts):
    table = pd.concat(list(attribute(tok_model, tokenizer, prompts, batch_size=2, progress=False)))
    n_comp = 1 + 2 * 4 + 2
    assert len(table) == 5 * 2 * 2 * n_comp
    assert set(table.columns) >= {"fact_id", "pair", "direction", "component", "delta_logodds"}
    vocab = VocabIndex(tokenizer)
    with torch.no_grad():
        c = _decomp(tok_model, tokenizer, prompts, "f2", "c")
        nc = _decomp(tok_model, tokenizer, prompts, "f2", "nc0")
        mask = vocab.answer_mask(["Paris"], c.logits.shape[-1])
        idx = c.labels.index("L1H2ATN")
        patched = nc.resid + c.components[:, idx] - nc.components[:, idx]
        want = answer_logodds(norm_unembed(tok_model, patched), mask) - answer_logodds(
            norm_unembed(tok_model, nc.resid), mask
        )
    got = table[
        (table.fact_id == "f2")
        & (table.pair == "nc0")
        & (table.direction == "nc_to_c")
        & (table.component == "L1H2ATN")
    ]
    # float32 unembedding of differently shaped batches rounds differently: ~1e-6.
    assert abs(float(got.delta_logodds.iloc[0]) - float(want[0])) < 1e-5


def test_batched_equals_single_and_sharded_equals_unsharded(tok_model, tokenizer, prompts):
    whole = pd.concat(list(attribute(tok_model, tokenizer, prompts, batch_size=5, progress=False)))
    ids = list(dict.fromkeys(prompts.fact_id))
    parts = []
    for shard in range(3):
        mine = shard_facts(ids, shard, 3)
        sub = prompts[prompts.fact_id.isin(mine)]
        parts += list(attribute(tok_model, tokenizer, sub, batch_size=1, progress=False))
    sharded = pd.concat(parts)
    key = ["fact_id", "pair", "direction", "component"]
    merged = whole.merge(sharded, on=key, suffixes=("_whole", "_sharded"))
    assert len(merged) == len(whole) == len(sharded)
    np.testing.assert_allclose(merged.delta_logodds_whole, merged.delta_logodds_sharded, atol=1e-5)


def test_shards_cover_every_fact_once():
    ids = [f"f{i}" for i in range(10)]
    shards = [shard_facts(ids, s, 3) for s in range(3)]
    assert sum(shards, []) == ids


def test_cumulative_of_all_components_is_the_bayes_factor(tok_model, tokenizer, prompts):
    labels = None
    with torch.no_grad():
        labels = _decomp(tok_model, tokenizer, prompts, "f0", "c").labels
    values, fact_ids, pairs = cumulative(
        tok_model, tokenizer, prompts, labels, batch_size=2, progress=False
    )
    assert values.shape == (10, len(labels))
    vocab = VocabIndex(tokenizer)
    with torch.no_grad():
        for row, (fid, pair) in enumerate(zip(fact_ids, pairs, strict=True)):
            c = _decomp(tok_model, tokenizer, prompts, fid, "c")
            nc = _decomp(tok_model, tokenizer, prompts, fid, pair)
            answer = prompts[prompts.fact_id == fid].answer.iloc[0]
            mask = vocab.answer_mask([answer], c.logits.shape[-1])
            lbf = answer_logodds(c.logits, mask) - answer_logodds(nc.logits, mask)
            assert abs(values[row, -1] - float(lbf[0])) < 1e-3


@pytest.mark.parametrize(
    ("linear", "slice_logits"),
    [(True, None), (True, 7 * 13), (True, 1), (False, None)],
    ids=["shared-difference", "vocab-slices", "one-token-slices", "row-by-row"],
)
def test_fast_attribution_equals_the_float64_reference_path(
    tok_model, tokenizer, prompts, linear, slice_logits, monkeypatch
):
    # Every component, pair and direction against rows unembedded one by one with
    # float64 log-odds; small chunk budgets make the rows span several chunks and the
    # vocabulary several slices (13 tokens wide, the last one partial; or one token,
    # so that every answer id fills a slice alone and that slice's rest is empty).
    monkeypatch.setattr(unembedding, "MAX_CHUNK_LOGITS", 7 * tok_model.lm_head.weight.shape[0])
    monkeypatch.setattr(unembedding, "SLICED_ROWS", 7)
    if slice_logits is not None:
        monkeypatch.setattr(unembedding, "SLICE_LOGITS", slice_logits)
        monkeypatch.setattr(unembedding, "MIN_SLICE", 1)
        shape = unembedding._chunk_shape(11, len(tokenizer), 4096, 3, sliced=True)
        assert shape == (1, 7, 13 if slice_logits > 1 else 1)
        assert len(tokenizer) % 13 != 0
    if not linear:
        monkeypatch.setattr(unembedding, "rms_linear", lambda model: False)
    table = pd.concat(list(attribute(tok_model, tokenizer, prompts, batch_size=3, progress=False)))
    vocab = VocabIndex(tokenizer)
    wide = patching.wide_prompts(prompts)
    with torch.no_grad():
        dec = patching._decompose_kinds(tok_model, tokenizer, wide)
        mask = vocab.answer_mask(list(wide["answer"]), dec["c"].logits.shape[-1])
        ref = []
        for pair in patching.PAIRS:
            for direction, target, source in (("nc_to_c", pair, "c"), ("c_to_nc", "c", pair)):
                t, s = dec[target], dec[source]
                rows = first_order_rows(t.resid, s.components, t.components)
                delta = logodds_of_rows(tok_model, rows, mask, 5) - logodds_of_rows(
                    tok_model, t.resid[:, None], mask, 5
                )
                ref.append(patching._long(wide["fact_id"], pair, direction, t.labels, delta))
    ref = pd.concat(ref)
    key = ["fact_id", "pair", "direction", "component"]
    merged = table.merge(ref, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(table) == len(ref)
    assert merged.delta_logodds.abs().max() > 0.01  # the components do matter
    np.testing.assert_allclose(merged.delta_logodds, merged.delta_logodds_ref, rtol=0, atol=1e-4)


def test_baselines_do_not_depend_on_how_rows_are_chunked(tok_model, tokenizer, prompts):
    """base_logodds unembeds the batch in one chunk; the values equal one row at a time."""
    from forbidden_facts.metrics import VocabIndex, answer_index
    from forbidden_facts.patching import _decompose_kinds, wide_prompts
    from forbidden_facts.unembedding import base_logodds, patched_logodds

    part = wide_prompts(prompts)
    with torch.no_grad():
        dec = _decompose_kinds(tok_model, tokenizer, part)
        mask = VocabIndex(tokenizer).answer_mask(list(part["answer"]), tok_model.config.vocab_size)
        ids, valid = answer_index(mask)
        resid = dec["c"].resid
        zero = torch.zeros(len(resid), 1, resid.shape[1])
        one_by_one = patched_logodds(tok_model, resid, zero, ids, valid, row_batch=1)[0][:, 0]
        assert torch.equal(base_logodds(tok_model, resid, ids, valid), one_by_one)


def test_dynamic_order_patches_each_pair_in_its_own_order(tok_model, tokenizer, prompts):
    from forbidden_facts.identification import dynamic_orders

    table = pd.concat(list(attribute(tok_model, tokenizer, prompts, batch_size=2, progress=False)))
    labels = list(dict.fromkeys(table.component))
    orders = dynamic_orders(table, labels)
    fixed, fact_ids, pairs = cumulative(
        tok_model, tokenizer, prompts, labels, batch_size=2, progress=False
    )
    dyn, dyn_facts, dyn_pairs = cumulative(
        tok_model, tokenizer, prompts, labels, batch_size=2, progress=False, pair_orders=orders
    )
    assert (dyn_facts, dyn_pairs) == (fact_ids, pairs)
    # Every component patched: the same set in both orders, so the other prompt's log BF.
    np.testing.assert_allclose(dyn[:, -1], fixed[:, -1], atol=1e-4)
    # k = 1 patches the pair's own most suppressive component: its first-order delta.
    nc_to_c = table[table.direction == "nc_to_c"].set_index(["fact_id", "pair", "component"])
    for row, key in enumerate(zip(fact_ids, pairs, strict=True)):
        own = orders[key]
        deltas = nc_to_c.loc[[(*key, c) for c in own], "delta_logodds"].to_numpy()
        assert deltas[0] == deltas.min()
        assert abs(dyn[row, 0] - deltas[0]) < 1e-4
    # Each pair's first component is at least as suppressive as the fixed order's first.
    assert (dyn[:, 0] <= fixed[:, 0] + 1e-5).all()
    # A pair missing from the orders is named.
    with pytest.raises(ValueError, match="no dynamic order"):
        cumulative(
            tok_model,
            tokenizer,
            prompts,
            labels[:3],
            progress=False,
            pair_orders={k: v for k, v in orders.items() if k[0] != "f1"},
        )


def test_a_component_equal_in_both_prompts_has_a_delta_of_exactly_zero(
    tok_model, tokenizer, prompts
):
    # Every prompt of a fact ends on the same token, so its embedding (EMBED) is the
    # same in c and nc: patching it must change nothing, not by a float32 rounding.
    table = pd.concat(list(attribute(tok_model, tokenizer, prompts, batch_size=3, progress=False)))
    embed = table[table.component == "EMBED"]
    assert len(embed) == 5 * 2 * 2
    assert (embed.delta_logodds == 0.0).all()
    assert (table[table.component != "EMBED"].delta_logodds != 0.0).mean() > 0.9
