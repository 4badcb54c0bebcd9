"""The before/after comparison and the dynamic order, by real snakemake on the tiny config.

config/test_shift.yaml adds `tiny-b` with `base: tiny` to config/test.yaml; both are
trained from the same `toy` block, so they are the same weights and the comparison must
find that nothing changed, fact by fact.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import copy_repo
from tests.conftest import snakemake as run_snakemake

ROOT = Path(__file__).resolve().parents[1]
CONFIGFILES = ["config/test.yaml", "config/test_shift.yaml"]
RUN = "results/tiny-b/tiny"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Snakemake on the tiny configuration plus the comparison's (config/test_shift.yaml)."""
    return run_snakemake(workdir, *args, check=check, configfiles=tuple(CONFIGFILES), options=())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("shift"))


@pytest.fixture(scope="module")
def finished(workdir) -> Path:
    snakemake(
        workdir,
        f"{RUN}/component_shift.parquet",
        f"{RUN}/figures/component_shift.png",
        f"{RUN}/figures/cumulative.png",
        "results/paper/tables/component_shift.tex",
    )
    return workdir


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_weights_show_no_change_fact_by_fact(finished):
    models = finished / "resources/models"
    # The premise: one toy block, one seed, the same weights.
    assert _sha(models / "tiny/model.safetensors") == _sha(models / "tiny-b/model.safetensors")
    run = finished / RUN
    shift = pd.read_parquet(run / "component_shift.parquet")
    attribution = pd.read_parquet(run / "attribution.parquet")
    base = pd.read_parquet(run / "base_attribution.parquet")
    inference = pd.read_parquet(run / "inference.parquet")
    kept = set(inference.loc[inference.kept, "fact_id"])
    # The base ran on exactly the derived model's kept facts, every component.
    assert set(base.fact_id) == set(attribution.fact_id) == kept
    assert set(shift.component) == set(attribution.component)
    assert len(base) == len(attribution)
    np.testing.assert_allclose(shift.change_log10, 0.0, atol=1e-9)
    # Paired by fact: each fact's own change is 0, so the interval has no width.
    np.testing.assert_allclose(shift.change_ci_high - shift.change_ci_low, 0.0, atol=1e-9)
    assert not shift.role_changed.any() and not shift.change_significant.any()
    assert (shift.before_role == shift.after_role).all()
    # "After" is this model's own ranking, "before" the same numbers from the base.
    comps = pd.read_parquet(run / "components.parquet").set_index("component")
    rows = shift.set_index("component")
    np.testing.assert_allclose(
        rows.after_mean_log10, comps.mean_log10.reindex(rows.index), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(rows.before_mean_log10, rows.after_mean_log10, atol=1e-9)
    assert (rows.after_role == comps.role.reindex(rows.index)).all()
    assert (rows.after_ci_high - rows.after_ci_low > 0).sum() > 0  # real intervals
    summary = json.loads((run / "component_shift.json").read_text())
    assert summary["base_model"] == "tiny" and summary["n_role_changed"] == 0
    assert summary["n_facts"] == len(kept)
    assert summary["n_kept_by_base"] == len(kept)
    assert summary["total_effect_before_log10"] == pytest.approx(
        summary["total_effect_after_log10"], abs=1e-9
    )
    assert summary["provenance"]["base_model"] == "tiny"
    assert (run / "figures/component_shift.pdf").stat().st_size > 0
    tex = (finished / "results/paper/tables/component_shift.tex").read_text()
    assert r"\section{What the fine-tune changed" in tex
    assert f"0 of {len(shift)} components changed role" in tex


def test_dynamic_order_curve_beside_the_fixed_one(finished):
    run = finished / RUN
    curve = pd.read_parquet(run / "cumulative.parquet")
    assert {"k", "component", "mean_log10", "q025_log10", "q975_log10"} <= set(curve.columns)
    assert {"mean_log10_dynamic", "q025_log10_dynamic", "q975_log10_dynamic"} <= set(curve.columns)
    pairs = np.load(run / "cumulative_pairs.npz")
    fixed, dynamic = pairs["values_log10"], pairs["values_log10_dynamic"]
    assert fixed.shape == dynamic.shape
    # k = 1 patches one component, exactly its first-order effect: each pair's own most
    # suppressive one is at least as suppressive as the fixed order's first.
    assert (dynamic[:, 0] <= fixed[:, 0] + 1e-9).all()
    np.testing.assert_allclose(curve.mean_log10_dynamic, dynamic.mean(axis=0))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dynamic_order"] is True
    for key in ("n_star_dynamic", "k50_dynamic", "k90_dynamic", "k95_dynamic"):
        assert key in summary


def test_a_base_that_names_no_model_fails_before_any_job(workdir):
    proc = snakemake(
        workdir, "-n", "--config", "models={tiny-b: {source: toy, base: tinyy}}", check=False
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "models.tiny-b.base" in out and "'tinyy'" in out
