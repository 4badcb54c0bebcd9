"""Patching with recomputation: the identities a researcher checks, on every family.

Tiny random models of each family the adapter supports (tests/families.py), float32.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

from forbidden_facts.decompose import decompose, model_labels, norm_unembed
from forbidden_facts.metrics import VocabIndex, answer_logodds
from forbidden_facts.modeling import encode
from forbidden_facts.patching import wide_prompts
from forbidden_facts.recomputation import (
    patch_mask,
    recompute,
    recomputed_logodds,
    variants,
    writes,
)
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
    # All but a few components: the layers a row patches whole add the c prompt's writes.
    sets += [[c for c in labels if c not in left] for left in (["L1H0ATN"], ["L0MLP"], ["EMBED"])]
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
    # And that differs from the first-order effect of the same writes, wherever those
    # writes differ between the prompts at all: tiny Gemma-3's layer 0 is a local layer
    # whose 4-token window at the last position sees the same tokens in c and nc.
    direct = _direct(family_model, pair, first)
    if direct.abs().max() > TOL:
        assert (lo - _lo(family_model, nc, mask) - direct).abs().max() > TOL
    else:
        assert family_model.config.model_type == "gemma3_text", "no layer-0 effect to recompute"


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


# -- The summaries: pure functions of the recomputed log-odds ------------------------


def _recomputed(n_facts=6, seed=0):
    """A made-up Recomputed: 3 components, total effect -2 natural, top-2 reproduce ~all."""
    from forbidden_facts.recomputation import Recomputed

    gen = np.random.default_rng(seed)
    fact_ids = [f"f{i}" for i in range(n_facts) for _ in range(2)]
    pairs = ["nc0", "nc1"] * n_facts
    n = len(fact_ids)
    nc = gen.normal(3.0, 0.1, n)
    c = nc - 2.0 + gen.normal(0, 0.05, n)
    single = np.stack([-1.5 + gen.normal(0, 0.05, n), -0.4 + 0 * nc, -0.01 + 0 * nc], 1)
    top_k = np.stack([single[:, 0], single[:, 0] - 0.45, c - nc], 1)
    rest_k = np.stack([(c - nc) - top_k[:, 0], (c - nc) - top_k[:, 1], 0 * nc], 1)
    return Recomputed(
        fact_ids, pairs, ["L1H0ATN", "L1MLP", "EMBED"], nc, c, c.copy(), single, top_k, rest_k
    )


def _attribution(rec, direct):
    rows = []
    for f, p, values in zip(rec.fact_ids, rec.pairs, direct, strict=True):
        for comp, v in zip(rec.top, values, strict=True):
            rows.append((f, p, "nc_to_c", comp, v))
            rows.append((f, p, "c_to_nc", comp, 99.0))
    import pandas as pd

    return pd.DataFrame(
        rows, columns=["fact_id", "pair", "direction", "component", "delta_logodds"]
    )


def test_total_effects_table_pairs_direct_and_total_effects():
    from forbidden_facts.artifacts import TOTAL_EFFECT_COLUMNS
    from forbidden_facts.faithfulness import total_effects_table

    rec = _recomputed()
    direct = rec.single * 0.6  # first order sees 60% of each effect
    table = total_effects_table(rec, _attribution(rec, direct))
    assert tuple(table.columns) == TOTAL_EFFECT_COLUMNS and len(table) == 3 * len(rec.pairs)
    np.testing.assert_allclose(table["total_log10"], rec.single.reshape(-1) / np.log(10))
    np.testing.assert_allclose(table["direct_log10"], direct.reshape(-1) / np.log(10))
    with pytest.raises(ValueError, match="rerun merge_attribution"):
        total_effects_table(rec, _attribution(rec, direct).query("component != 'L1MLP'"))


def test_summary_shares_spearman_and_differing_components():
    from forbidden_facts.artifacts import Faithfulness as F
    from forbidden_facts.faithfulness import faithfulness_summary, total_effects_table

    rec = _recomputed()
    direct = rec.single.copy()
    direct[:, 0] *= 0.6  # only the top component's total differs from its direct effect
    table = total_effects_table(rec, _attribution(rec, direct))
    out = faithfulness_summary(rec, table, n_star=2, n_boot=200, seed=1)
    # Every key of the contract but the run's names and the attack's (the step adds those).
    own = {k for k in F.required() if k not in ("model", "dataset") and not k.startswith("attack")}
    assert own == set(out)
    share = rec.top_k[:, 1].mean() / rec.total.mean()
    assert out[F.recomputed_share] == pytest.approx(share)
    low, high = out[F.recomputed_share_ci]
    assert low <= share <= high
    assert out[F.complement_share] == pytest.approx(rec.rest_k[:, 1].mean() / rec.total.mean())
    assert out[F.k90_recomputed] == 2  # the top 2 reproduce 97%, the top 1 75%
    assert out[F.spearman_direct_total] == pytest.approx(1.0)
    assert [d["component"] for d in out[F.differing]] == ["L1H0ATN"]
    assert out[F.all_components_error] == pytest.approx(0.0)
    # A model that does not suppress has nothing to explain: no shares, no k90.
    flipped = _recomputed()
    flipped.logodds_c = flipped.logodds_nc + 2.0
    none = faithfulness_summary(flipped, table, n_star=2, n_boot=10)
    assert none[F.recomputed_share] is None and none[F.k90_recomputed] is None


def test_circuit_curve_and_its_figure(tmp_path):
    from forbidden_facts import plots
    from forbidden_facts.artifacts import FAITHFULNESS_CURVE_COLUMNS
    from forbidden_facts.artifacts import Faithfulness as F
    from forbidden_facts.faithfulness import circuit_curve

    rec = _recomputed()
    curve = circuit_curve(rec, np.array([-0.5, -0.8]))
    assert tuple(curve.columns) == FAITHFULNESS_CURVE_COLUMNS and list(curve["k"]) == [1, 2, 3]
    np.testing.assert_allclose(curve["sufficiency_log10"], rec.top_k.mean(0) / np.log(10))
    assert (curve["sufficiency_low"] < curve["sufficiency_log10"]).all()
    assert np.isnan(curve["first_order_log10"].iloc[2])  # past the first-order curve's end
    drawn = plots.circuit_curves(
        curve, {F.n_star: 2, F.recomputed_share: 0.97}, tmp_path / "c.png", tmp_path / "c.pdf"
    )
    lines = drawn.panel().lines
    suff = next(v for k, v in lines.items() if k.startswith("top-k patched"))
    np.testing.assert_allclose(suff[:, 1], -curve["sufficiency_log10"])
    assert any(k.startswith("N* = 2, 97%") for k in lines)
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"


def test_attack_prediction_auc_and_spearman():
    import pandas as pd

    from forbidden_facts.artifacts import ATTACK_PREDICTION_COLUMNS
    from forbidden_facts.artifacts import Faithfulness as F
    from forbidden_facts.faithfulness import attack_prediction, attack_summary, auc

    facts = [f"f{i}" for i in range(6)]
    heads = ["L1H0ATN", "L1H2ATN"]
    attn = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    attack = pd.DataFrame(
        {
            "fact_id": facts * 2,
            "variant": ["attack"] * 6 + ["control"] * 6,
            "delta_logodds_log10": list(-attn * 3) + [0.0] * 6,
            "top1_correct_before": [True] * 12,
            "top1_correct_after": [True, True, True, False, False, False] + [True] * 6,
        }
    )
    attention = pd.DataFrame(
        [
            (f, v, h, a / 2 if v == "attack" else 0.9)
            for v in ("attack", "control")
            for f, a in zip(facts, attn, strict=True)
            for h in [*heads, "L0H0ATN"]
        ],
        columns=["fact_id", "variant", "component", "attention"],
    )
    attribution = pd.DataFrame(
        [
            (f, p, "nc_to_c", h, -np.log(10))  # -1 log10 per head and pair
            for f in facts
            for p in ("nc0", "nc1")
            for h in [*heads, "L0H0ATN"]
        ],
        columns=["fact_id", "pair", "direction", "component", "delta_logodds"],
    )
    pred = attack_prediction(attack, attention, attribution, heads)
    assert list(pred.columns) == list(ATTACK_PREDICTION_COLUMNS) and len(pred) == 6
    np.testing.assert_allclose(pred["attention_inserted"], attn)  # the two heads, attack rows
    np.testing.assert_allclose(pred["heads_direct_log10"], -2.0)  # two heads, -1 each
    np.testing.assert_allclose(pred["predictor_log10"], -2.0 * attn)
    assert list(pred["flipped"]) == [False, False, False, True, True, True]
    out = attack_summary(pred, n_boot=50, seed=0)
    assert out[F.attack_spearman] == pytest.approx(1.0)
    assert out[F.attack_auc] == pytest.approx(1.0) and out[F.attack_n_flipped] == 3
    assert auc(np.array([1.0, 2.0, 3.0]), np.array([True, False, True])) == pytest.approx(0.5)
    assert auc(np.array([1.0, 2.0]), np.array([True, True])) is None


def test_paper_section_states_the_numbers_as_found(tmp_path):
    from types import SimpleNamespace

    from forbidden_facts import io
    from forbidden_facts.faithfulness import faithfulness_summary, total_effects_table
    from forbidden_facts.steps.faithfulness import table_faithfulness
    from tests.conftest import ROOT

    rec = _recomputed()
    table = total_effects_table(rec, _attribution(rec, rec.single * 0.6))
    found = faithfulness_summary(rec, table, n_star=1, n_boot=100, seed=0)
    found |= {"model": "m", "dataset": "d", "attack_heads": ["L1H0ATN"], "attack_n_facts": 6}
    found |= {"attack_spearman": 0.5, "attack_spearman_ci": [0.1, 0.8], "attack_auc": 0.7}
    found |= {"attack_n_flipped": 2}
    none = {**found, "recomputed_share_at_n_star": None, "total_effect_log10": -0.2}
    paths = []
    for i, summary in enumerate((found, none)):
        paths.append(tmp_path / f"f{i}.json")
        io.write_json(paths[-1], summary, provenance={})
    out = tmp_path / "faithfulness.tex"
    job = SimpleNamespace(
        input=SimpleNamespace(
            summaries=[str(p) for p in paths],
            template=str(ROOT / "paper/templates/faithfulness.tex.j2"),
        ),
        params=SimpleNamespace(models=["m", "m2"], datasets=["d", "d"]),
        output=[str(out)],
    )
    table_faithfulness(job)
    text = out.read_text()
    assert "How faithful is the description?" in text and "((" not in text
    share = f"{100 * found['recomputed_share_at_n_star']:.1f}"
    assert f"reproduce\n{share}\\%" in text
    # Share 0.75 with an interval below 1: the text says the circuit falls short.
    assert "reproduces only part of the effect" in text
    assert "the model does not suppress the answer" in text  # the second run
    assert "Spearman 0.50 over 6 facts" in text and "AUC 0.70" in text


def test_cached_path_under_sdpa_attention(tokenizer, prompts):
    # The workflow loads models with sdpa attention (a left-padded batch, a mask over the
    # cache): the cached path must still equal full forward passes there.
    model = tiny_family("qwen2", vocab_size=len(tokenizer), seed=3)
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    facts = wide_prompts(prompts)
    c = encode(tokenizer, list(facts["prompt_c"]))
    nc = encode(tokenizer, list(facts["prompt_nc1"]))
    with torch.no_grad():
        source = writes(model, c)
    mask = VocabIndex(tokenizer).answer_mask(list(facts["answer"]), source.logits.shape[-1])
    pair = (c, nc, source, mask)
    sets = [[], ["L1H0ATN", "L0MLP"], model_labels(model)]
    cached = _run(model, pair, sets, cached=True, row_batch=3)
    torch.testing.assert_close(cached, _run(model, pair, sets, cached=False), rtol=0, atol=TOL)
    torch.testing.assert_close(cached[:, 2], _lo(model, c, mask), rtol=0, atol=TOL)


def test_the_layers_below_a_patch_do_not_run_again(family_model, pair):
    # A patch changes nothing below its own layer: those layers hand on the unpatched
    # prompt's output (layer_skip.skipping_layers_below) instead of running per row.
    first_layer = family_model.model.layers[0].self_attn.o_proj
    rows_seen = []
    handle = first_layer.register_forward_hook(lambda _m, args, _o: rows_seen.append(len(args[0])))
    try:
        sets = [[], ["L1H0ATN"], ["L1MLP"]]
        upper = _run(family_model, pair, sets, row_batch=8)
        upper_calls = len(rows_seen)
        rows_seen.clear()
        _run(family_model, pair, [["L0H0ATN"]], row_batch=8)
    finally:
        handle.remove()
    # The prompts' cache and their unpatched last position: two passes, no patched row.
    assert upper_calls == 2
    assert sum(rows_seen) > 2 * len(pair[1].input_ids)
    full = _run(family_model, pair, sets, cached=False)
    torch.testing.assert_close(upper, full, rtol=0, atol=TOL)


def test_a_layer_patched_whole_does_not_run(family_model, pair):
    # Every head and the MLP of layer 0 patched: the layer adds the c prompt's writes
    # (layer_skip.adding_source_writes), and only layer 1 runs for the patched rows.
    labels = model_labels(family_model)
    layers = family_model.model.layers
    seen = {0: [], 1: []}
    handles = [
        layers[i].self_attn.o_proj.register_forward_hook(
            lambda _m, args, _o, i=i: seen[i].append(len(args[0]))
        )
        for i in (0, 1)
    ]
    sets = [[c for c in labels if c != "L1H0ATN"], labels]
    try:
        cached = _run(family_model, pair, sets, row_batch=8)
    finally:
        for handle in handles:
            handle.remove()
    n = len(pair[1].input_ids)
    # Layer 0: the prompts' cache and their unpatched last position only; layer 1 also
    # each prompt's first row (the second patches every component: no layer runs).
    assert (len(seen[0]), len(seen[1])) == (2, 2 + n)
    torch.testing.assert_close(
        cached, _run(family_model, pair, sets, cached=False), rtol=0, atol=TOL
    )


def test_the_layer_skip_puts_back_a_forward_the_layer_already_had(family_model, pair):
    # accelerate's device-map hook sets a layer's forward on the instance: skipping the
    # layer for a pass must leave that hook in place afterwards.
    layer = family_model.model.layers[0]
    hooked = functools.partial(type(layer).forward, layer)
    layer.forward = hooked
    try:
        _run(family_model, pair, [["L1H0ATN"]])
        assert layer.__dict__["forward"] is hooked
    finally:
        del layer.forward
