"""p_correct and log-odds follow docs/science.md § Metric (vocabulary equivalence, float64)."""

import math

import numpy as np
import torch

from forbidden_facts.metrics import (
    VocabIndex,
    answer_index,
    answer_logodds,
    answer_prob,
    gathered_logodds,
    logodds,
)


def test_p_correct_sums_every_spelling_of_the_answer(tokenizer):
    vocab = VocabIndex(tokenizer)
    ids = vocab.answer_ids("california")
    assert len(ids) == 2
    logits = torch.full((1, len(tokenizer)), -5.0)
    logits[0, ids[0]] = 2.0
    logits[0, ids[1]] = 1.0
    mask = vocab.answer_mask(["California"], len(tokenizer))
    probs = torch.softmax(logits.double(), -1)[0]
    assert abs(answer_prob(logits, mask).item() - (probs[ids[0]] + probs[ids[1]]).item()) < 1e-12


def test_logodds_from_logits_is_finite_where_p_rounds_to_one():
    logits = torch.tensor([[60.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, False]])
    lo = answer_logodds(logits, mask).item()
    assert math.isfinite(lo)
    assert abs(lo - (60 - math.log(2))) < 1e-9
    # Agrees with log(p) - log(1-p) where that is computable.
    logits = torch.tensor([[1.0, 0.5, -0.3]])
    p = answer_prob(logits, mask).item()
    assert abs(answer_logodds(logits, mask).item() - float(logodds(p))) < 1e-9


def test_logodds_of_probabilities():
    np.testing.assert_allclose(logodds(np.array([0.5, 0.9])), [0.0, math.log(9)])


def test_fast_logodds_equals_two_logsumexps_across_the_range():
    torch.manual_seed(0)
    logits = torch.randn(64, 500) * 3
    logits[:16, 7] += torch.linspace(0, 40, 16)  # answer holds almost all the mass
    logits[16:32, 7] -= torch.linspace(0, 40, 16)  # answer nearly absent
    mask = torch.zeros(64, 500, dtype=torch.bool)
    mask[:, 7] = True
    mask[::2, 9] = True  # two spellings of the answer on some rows
    z = logits.double()
    exact = torch.logsumexp(z.masked_fill(~mask, -math.inf), -1) - torch.logsumexp(
        z.masked_fill(mask, -math.inf), -1
    )
    torch.testing.assert_close(answer_logodds(logits, mask), exact, rtol=1e-10, atol=1e-9)


def test_gathered_float32_logodds_match_float64_on_a_real_vocabulary_size():
    # SmolLM2's vocabulary; rows where the answer holds almost all of the mass
    # (p up to 1 - 1e-20) or almost none (p down to 1e-40), two spellings on some.
    torch.manual_seed(1)
    d_vocab, n = 49152, 48
    logits = torch.randn(n, d_vocab) * 4
    logits[:16, 11] = logits[:16].amax(-1) + torch.linspace(0, 60, 16)
    logits[16:32, 11] = logits[16:32].amax(-1) - torch.linspace(20, 100, 16)
    mask = torch.zeros(n, d_vocab, dtype=torch.bool)
    mask[:, 11] = True
    mask[::3, 40000] = True
    scale = torch.rand(n) + 0.5  # the 1/rms factor applied inside the exponential
    z = logits.double() * scale.double()[:, None]
    exact = torch.logsumexp(z.masked_fill(~mask, -math.inf), -1) - torch.logsumexp(
        z.masked_fill(mask, -math.inf), -1
    )
    assert exact[:16].max() > 40 and exact[16:32].min() < -90  # the edge cases are there
    ids, valid = answer_index(mask)
    assert valid.sum().item() == mask.sum().item()
    got = gathered_logodds(logits.clone(), ids, valid, scale)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=1e-4)
    torch.testing.assert_close(
        gathered_logodds(logits.clone(), ids, valid).double(),
        answer_logodds(logits, mask),
        rtol=0,
        atol=1e-4,
    )
