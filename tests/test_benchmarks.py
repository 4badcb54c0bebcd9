"""The hand-run benchmarks still run against the library, on the organism's shape at one
layer (a few seconds each), and write the figures benchmarks/README.md and issue 24 name.

They are not timed here (benchmarks print figures, tests do not time them); what is
checked is that each completes and what it reports holds for a user who reruns it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_scale_benchmark_writes_every_stage_and_the_memory_prediction(tmp_path):
    out = tmp_path / "scale.json"
    small = ["--preset", "organism", "--layers", "1", "--facts", "2", "--ov-rows", "8"]
    _bench("scale_benchmark.py", *small, "--search-tokens", "4", "--json", str(out))
    figures = json.loads(out.read_text())
    stages = [
        "inference",
        "attribution",
        "cumulative",
        "faithfulness",
        "ov",
        "attention",
        "token_search",
    ]
    assert sorted(figures["stages"]) == sorted(stages)
    for stage in stages:
        assert figures["stages"][stage]["seconds"] > 0
        assert figures["stages"][stage]["peak_mb"] > 0
    # The decomposition check passed at float32's tolerance, and the formula's peak is
    # of the measured one's size (the weights and the process dominate at this shape).
    assert figures["decomposition_error"] < figures["decomposition_tolerance"]
    predicted = figures["attribution"]["predicted_peak_mb"]
    assert abs(predicted / figures["stages"]["attribution"]["peak_mb"] - 1) < 0.2


def test_precision_benchmark_compares_both_half_dtypes_with_float32(tmp_path):
    out = tmp_path / "precision.json"
    _bench(
        "precision_benchmark.py", "--preset", "organism", "--layers", "1", "--facts", "2",
        "--json", str(out),
    )  # fmt: skip
    rows = json.loads(out.read_text())["dtypes"]
    assert sorted(rows) == ["bfloat16", "float16"]
    for row in rows.values():
        # The half dtypes move a patching delta far less than the largest effect, and
        # keep the ranking's top component.
        assert row["max_abs_delta_patching_log10"] < 0.5 * row["largest_patching_effect_log10"]
        assert row["top1_same"]
    # float16 (11 mantissa bits) is closer to float32 than bfloat16 (8).
    assert (
        rows["float16"]["max_abs_delta_logodds_log10"]
        < rows["bfloat16"]["max_abs_delta_logodds_log10"]
    )


def test_attribution_benchmark_prints_the_throughput_ratio():
    text = _bench(
        "attribution_benchmark.py", "--preset", "organism", "--layers", "1", "--facts", "4",
        "--repeats", "1",
    )  # fmt: skip
    assert text.startswith("model organism (1 layers, random weights) (10 components)")
    line = next(s for s in text.splitlines() if s.startswith("attribution / forward"))
    ratio = float(line.split("median ")[1].split()[0])
    assert 0 < ratio < 1  # attribution does more work than the bare forward pass


def test_faithfulness_benchmark_prints_both_paths_and_their_agreement():
    text = _bench(
        "faithfulness_benchmark.py", "--preset", "organism", "--layers", "1", "--facts", "2",
        "--full-facts", "1", "--top-k", "3", "--repeats", "1",
    )  # fmt: skip
    assert text.startswith("model organism (1 layers, random weights)")
    assert "(11 variants per fact and pair)" in text
    line = next(s for s in text.splitlines() if s.startswith("largest difference"))
    assert float(line.split(": ")[1].split()[0]) < 1e-5  # the two paths agree
    assert "stage recomputation, cached:" in text


def test_the_gpu_check_script_runs_end_to_end_in_its_cpu_mode(tmp_path):
    # The one-shot GPU run (15 minutes, when a GPU is lent) must not fail on a broken
    # argument: --quick runs the same script on the CPU, the CUDA tests skipped.
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["cuda_available"] is False and env["torch"]
    assert json.loads((tmp_path / "tests.json").read_text())["pytest_rc"] in (0, 5)
    figures = json.loads((tmp_path / "scale_7b.json").read_text())
    assert figures["stages"]["attribution"]["seconds"] > 0
    assert figures["decomposition_error"] < figures["decomposition_tolerance"]
    # The token search's old and new implementations ran and gave the same table.
    search = json.loads((tmp_path / "search_7b.json").read_text())
    assert (
        min(search["seconds_per_fact_token"]["old"] + search["seconds_per_fact_token"]["new"]) > 0
    )
    assert search["agreement"]["top10_same"] and not search["agreement"]["other_columns_unequal"]
