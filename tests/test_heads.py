"""Head analysis: the OV score against a brute-force computation; forbidden-word spans."""

import math

import numpy as np
import torch

from forbidden_facts.heads import (
    forbidden_attention,
    forbidden_spans,
    ov_scores,
    row_logodds,
    row_logodds_sums,
)


def _brute_force_ov(model, layer: int, head: int) -> float:
    """The definition of docs/science.md § Heads, literally: V x V logits through the full d_model path."""
    cfg = model.config
    d_head = cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    blk = model.model.layers[layer]
    with torch.no_grad():
        emb = model.model.embed_tokens.weight.double()
        ln = blk.input_layernorm
        x = (
            emb
            * torch.rsqrt(emb.pow(2).mean(-1, keepdim=True) + ln.variance_epsilon)
            * ln.weight.double()
        )
        kv = head // group
        w_v = blk.self_attn.v_proj.weight.double()[kv * d_head : (kv + 1) * d_head]
        w_o = blk.self_attn.o_proj.weight.double()[:, head * d_head : (head + 1) * d_head]
        o = (x @ w_v.T) @ w_o.T
        fn = model.model.norm
        o = (
            o
            * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + fn.variance_epsilon)
            * fn.weight.double()
        )
        logits = o @ model.lm_head.weight.double().T
        p = torch.softmax(logits, -1)
        lo = (torch.log(p) - torch.log1p(-p)) / math.log(10)
    vocab = lo.shape[0]
    return float((lo.diagonal().mean() - lo.mean()) * vocab / (vocab - 1))


def test_ov_score_matches_brute_force_for_mha_and_gqa(model):
    scores = ov_scores(model, vocab_chunk=17, progress=False)
    assert scores.shape == (2, 4)
    for layer, head in [(0, 0), (1, 3), (0, 2)]:
        assert abs(scores[layer, head] - _brute_force_ov(model, layer, head)) < 1e-4


def test_row_logodds_is_stable_when_p_rounds_to_one():
    logits = torch.tensor([[80.0, 0.0, -1.0, 2.0]])
    lo = row_logodds(logits)
    assert torch.isfinite(lo).all()
    # log-odds of the top entry = 80 - logsumexp(0, -1, 2)
    assert abs(lo[0, 0].item() - (80 - math.log(1 + math.exp(-1) + math.exp(2)))) < 1e-9


def test_forbidden_span_covers_exactly_the_word(tokenizer, prompts):
    rows = prompts[prompts.kind == "c"]
    spans = forbidden_spans(tokenizer, list(rows.prompt), list(rows.forbidden_word))
    for span, prompt, word in zip(spans, rows.prompt, rows.forbidden_word, strict=True):
        ids = tokenizer(prompt)["input_ids"]
        text = tokenizer.decode([ids[i] for i in span]).strip()
        assert text == word


def test_forbidden_attention_is_a_probability_share(tok_model, tokenizer, prompts):
    table = forbidden_attention(tok_model, tokenizer, prompts, batch_size=2, progress=False)
    assert len(table) == 2 * 4
    for kind in ("c", "nc0", "nc1"):
        col = table[f"attn_forbidden_{kind}"]
        assert ((col >= 0) & (col <= 1)).all()
    # Batch size does not change the result.
    again = forbidden_attention(tok_model, tokenizer, prompts, batch_size=5, progress=False)
    np.testing.assert_allclose(table.attn_forbidden_c, again.attn_forbidden_c, atol=1e-6)


def test_ov_sums_in_float32_agree_with_the_float64_log_odds():
    # A 49152-token vocabulary, with rows whose top entry holds almost all the mass.
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(6, 49152, generator=gen)
    logits[0, 7] = 60.0
    logits[1, 11] = 25.0
    src = torch.tensor([7, 11, 3, 4, 5, 6])
    lo = row_logodds(logits)
    total, diag = row_logodds_sums(logits, src)
    assert abs(total - lo.sum().item()) <= 1e-6 * lo.abs().sum().item()
    assert abs(diag - lo.gather(-1, src[:, None]).sum().item()) < 1e-4


def test_ov_sums_agree_with_the_log_odds_where_several_entries_are_likely():
    # No entry above 1/2, but a few between 1e-3 and 1/2 (their -log(1 - p) is taken
    # exactly) and the long tail below (taken as p + p^2/2), on a 49152-token vocabulary.
    gen = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(5, 49152, generator=gen)
    logits[0, :3] = torch.tensor([13.0, 12.5, 12.0])  # p 0.36, 0.22, 0.13
    logits[1, 100:140] = 10.0  # forty entries of about 2% each
    logits[2, 5] = 12.5  # p 0.42
    src = torch.tensor([0, 120, 5, 9, 4])
    lo = row_logodds(logits)
    p = logits.double().softmax(-1)
    assert 0.4 < p.max() < 0.5 and ((p > 1e-3).sum(-1) > 10).all()
    total, diag = row_logodds_sums(logits, src)
    assert abs(total - lo.sum().item()) <= 1e-7 * lo.abs().sum().item()
    assert abs(diag - lo.gather(-1, src[:, None]).sum().item()) < 1e-5
