"""Artifacts on disk: json summaries are strict json."""

import json

import numpy as np

from forbidden_facts import io


def test_undefined_means_are_written_as_null_not_nan(tmp_path):
    path = tmp_path / "summary.json"
    summary = {
        "total_effect_log10": float("nan"),
        "by_relation": {"a": {"mean": np.float64("nan"), "n": np.int64(3)}, "b": {"mean": 1.5}},
        "curve": [1.0, float("inf"), np.float32(2.0)],
    }
    io.write_json(path, summary, provenance={"model": "toy"})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    # a strict reader (no NaN constants) accepts it
    data = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert data["total_effect_log10"] is None
    assert data["by_relation"] == {"a": {"mean": None, "n": 3}, "b": {"mean": 1.5}}
    assert data["curve"] == [1.0, None, 2.0]
    assert data["provenance"] == {"model": "toy"}
