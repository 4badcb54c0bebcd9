"""Inference: batched equals one prompt at a time; NaN logits name the fact; the total effect."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from forbidden_facts.inference import (
    NonFiniteLogitsError,
    check_finite,
    run_inference,
    total_effect,
)


def test_batched_equals_one_prompt_at_a_time(tok_model, tokenizer, prompts):
    one = run_inference(tok_model, tokenizer, prompts, batch_size=1, progress=False)
    many = run_inference(tok_model, tokenizer, prompts, batch_size=7, progress=False)
    np.testing.assert_allclose(one.p_correct, many.p_correct, atol=1e-5)
    np.testing.assert_allclose(one.logodds, many.logodds, atol=1e-5)
    assert (one.top1_token == many.top1_token).all()
    assert list(one.columns) == [
        "fact_id",
        "kind",
        "p_correct",
        "logodds",
        "top1_token",
        "top1_prob",
        "kept",
    ]


def test_nan_logits_stop_with_the_fact_id():
    logits = torch.zeros(3, 10)
    logits[1, 4] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match="f7"):
        check_finite(logits, ["f1", "f7", "f9"], "inference")


def test_kept_and_total_effect_follow_the_definitions():
    rows = []
    # fact a: known (both nc > 0.5), c at 0.01; fact b: nc1 below 0.5, dropped.
    for fid, p in {
        "a": {"c": 0.01, "nc0": 0.9, "nc1": 0.99},
        "b": {"c": 0.2, "nc0": 0.9, "nc1": 0.4},
    }.items():
        for kind, pk in p.items():
            rows.append((fid, kind, pk, math.log(pk) - math.log1p(-pk)))
    table = pd.DataFrame(rows, columns=["fact_id", "kind", "p_correct", "logodds"])
    from forbidden_facts.inference import add_kept

    table = add_kept(table)
    assert table.groupby("fact_id").kept.first().to_dict() == {"a": True, "b": False}
    te = total_effect(table)
    lo = lambda p: math.log10(p / (1 - p))  # noqa: E731
    expected = np.mean([lo(0.9) - lo(0.01), lo(0.99) - lo(0.01)])
    assert (
        te["n_kept"] == 1
        and te["n_facts"] == 2
        and te["total_effect_log10"] == pytest.approx(expected)
    )


def test_total_effect_of_a_group_without_kept_facts_is_undefined_not_an_error():
    # A relation none of whose facts the model knows (paper_hq on the organism).
    table = pd.DataFrame(
        {
            "fact_id": ["f1"] * 3,
            "kind": ["c", "nc0", "nc1"],
            "logodds": [0.1, -2.0, -2.0],
            "kept": [False] * 3,
        }
    )
    effect = total_effect(table)
    assert effect["n_facts"] == 1 and effect["n_kept"] == 0
    assert math.isnan(effect["total_effect_log10"])
