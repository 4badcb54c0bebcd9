"""The workflow through a real SLURM cluster gives the artifacts of a local run.

`tests/slurm/start_cluster.sh` starts a single-node cluster on this machine (it
installs Debian's SLURM packages where they are missing). The tiny configuration
(config/test.yaml) then runs through `profiles/slurm` with
snakemake-executor-plugin-slurm in a fresh copy of the repository, and is compared
with the session's local tiny run (`tiny_run`, tests/conftest.py). The SLURM run must
really have gone through sbatch (every job's rule is in SLURM's own job list, with a
log from SLURM), and its artifacts must equal the local run's: training and every
step are deterministic given the seed and the thread count.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import CONFIGFILE, RUN, copy_repo

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "tests/slurm"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cluster_is_up() -> bool:
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ping.returncode == 0 and "UP" in ping.stdout


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster (stopped afterwards if it was started here)."""
    was_up = _cluster_is_up()
    proc = subprocess.run(
        ["bash", str(SLURM_DIR / "start_cluster.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode == 3:
        pytest.skip(f"SLURM cannot be installed on this machine: {output.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"start_cluster.sh failed (exit {proc.returncode}):\n{output}")
    yield output
    if not was_up:
        subprocess.run(
            ["bash", str(SLURM_DIR / "stop_cluster.sh")], capture_output=True, timeout=120
        )


def run_snakemake(work: Path, *args: str, timeout: float = 600) -> str:
    """Snakemake's output; on a timeout, SIGINT first, so that it cancels its SLURM jobs."""
    # Two attribution shards (two SLURM jobs); tables, paper and archive are not
    # compared here (and need no TeX). --set-scatter, --omit-from and --configfile take
    # several values each, so they go last.
    cmd = [sys.executable, "-m", "snakemake", *args, "--set-scatter", "attribution=2"]
    cmd += ["--omit-from", "tables", "--configfile", CONFIGFILE]
    proc = subprocess.Popen(
        cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} ran over {timeout} s:\n{out[-6000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out[-8000:]}")
    return out


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The tiny run through profiles/slurm; (its directory, snakemake's log, seconds)."""
    work = copy_repo(tmp_path_factory.mktemp("slurm") / "repo")
    # CI settings over the real profile: the cluster's only partition, drafted by the
    # plugin's own tool; squeue status checks (there is no accounting database; the
    # cluster keeps finished jobs in squeue for MinJobAge); quick first checks; and
    # SLURM's logs kept so that the test can read them.
    ci = work / "ci-profile"
    ci.mkdir()
    subprocess.run(
        [
            Path(sys.executable).parent / "generate-slurm-partition-config",
            "-o",
            ci / "partitions.yaml",
        ],
        check=True,
        capture_output=True,
    )
    assert list(yaml.safe_load((ci / "partitions.yaml").read_text())["partitions"]) == ["debug"]
    settings = {
        "slurm-partition-config": "partitions.yaml",
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
    }
    (ci / "config.yaml").write_text(yaml.safe_dump(settings))
    start = time.monotonic()
    log = run_snakemake(
        work,
        "--profile",
        "profiles/slurm",
        "--profile",
        "ci-profile",
        "--workflow-profile",
        "none",
        "--jobs",
        "2",
    )
    return work, log, time.monotonic() - start


def slurm_jobs(run_id: str) -> dict[str, tuple[str, str]]:
    """SLURM's record of a run's jobs: job id -> (comment, state)."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%k|%T", "--name", run_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {job_id: (comment, state) for job_id, comment, state in rows}


def job_stats(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table: rule -> number of jobs."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_every_job_went_through_slurm(slurm_run):
    work, log, seconds = slurm_run
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    jobs = slurm_jobs(run_id)
    stats = job_stats(log)
    # `all` only collects the targets and runs on the submitting host.
    submitted = {rule: n for rule, n in stats.items() if rule != "all"}
    assert {"train_toy_model", "attribution_shard", "cumulative_patching"} <= set(submitted)
    assert len(jobs) == sum(submitted.values()), (jobs, stats)
    assert {state for _, state in jobs.values()} == {"COMPLETED"}
    # The plugin names each job's rule (and wildcards) in its SLURM comment.
    rules = [
        re.match(r"rule_(\w+?)(?:_wildcards_|$)", comment).group(1) for comment, _ in jobs.values()
    ]
    assert {rule: rules.count(rule) for rule in set(rules)} == submitted
    # And SLURM wrote each job's log where the plugin asked for it.
    logs = {p.stem: p for p in (work / ".snakemake/slurm_logs").rglob("*.log")}
    assert set(jobs) <= set(logs)
    shard_logs = [logs[j] for j, (c, _) in jobs.items() if c.startswith("rule_attribution_shard")]
    assert len(shard_logs) == 2
    for path in shard_logs:
        assert "rule attribution_shard" in path.read_text()
    print(f"\nSLURM run: {len(jobs)} jobs in {seconds:.0f} s; {sorted(set(rules))}")


def _without_created(summary: dict) -> dict:
    summary = json.loads(json.dumps(summary))
    summary.get("provenance", {}).pop("created", None)
    return summary


def _assert_close(a, b, path="summary"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, int | float), path
        assert (math.isnan(a) and math.isnan(b)) or b == pytest.approx(a, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


def test_slurm_artifacts_equal_the_local_run(tiny_run, slurm_run):
    slurm = slurm_run[0] / RUN
    local = tiny_run / RUN
    ours, theirs = (pd.read_parquet(d / "components.parquet") for d in (local, slurm))
    assert list(theirs.component) == list(ours.component)
    assert list(theirs["rank"]) == list(ours["rank"])
    assert theirs.mean_log10.to_numpy() == pytest.approx(ours.mean_log10.to_numpy(), abs=1e-6)

    summaries = [json.loads((d / "summary.json").read_text()) for d in (local, slurm)]
    assert "created" in summaries[0]["provenance"]
    _assert_close(*(_without_created(s) for s in summaries))

    pd.testing.assert_frame_equal(
        pd.read_parquet(slurm / "inference.parquet"),
        pd.read_parquet(local / "inference.parquet"),
        rtol=1e-6,
    )


def test_profile_sends_gpu_jobs_to_the_gpu_partition():
    """profiles/slurm/partitions.yaml, read by the plugin: GPU jobs to `gpu`, the rest to `cpu`.

    Needs no cluster: the plugin's own partition choice and GPU request, on fake jobs.
    """
    import logging
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    partitions = read_partition_file(ROOT / "profiles/slurm" / profile["slurm-partition-config"])
    log = logging.getLogger("slurm-profile")

    def partition(threads=1, **resources):
        job = SimpleNamespace(name="job", threads=threads, resources=resources)
        return get_best_partition(partitions, job, log)

    assert partition(mem_mb=4000, runtime=60) == "cpu"  # figures, tables, ...
    assert partition(threads=2, mem_mb=4000, runtime=30) == "cpu"  # train_toy_model
    assert partition(gpu=0, mem_mb=4000, runtime=240) == "cpu"  # a GPU rule on the toy
    assert partition(gpu=1, mem_mb=64000, runtime=240) == "gpu"  # 7b attribution shard
    assert partition(gpu=4, mem_mb=256000, runtime=240) == "gpu"  # 70b
    # GPUs are asked for only when a job's gpu is above 0.
    assert set_gres_string(SimpleNamespace(resources={"gpu": 4})) == " --gpus=4"
    assert set_gres_string(SimpleNamespace(resources={"gpu": 0})) == ""
