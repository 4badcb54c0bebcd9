"""The never-taught guarantee under real Snakemake: whatever happens to a fine-tune's
training record, the analysis of a fine-tuned model never sees a fact trained into it
or into any of its bases.

Each case starts from a private copy of the finished tiny run, fine-tunes config/
test.yaml's `tiny-obedient` (3 steps of the tiny organism) and damages its record the
way a user could: the next plan must notice, and the prompts step must stop with a
message naming the file and the fix, keeping its earlier outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import snakemake

TARGET = "results/tiny-obedient/tiny/prompts_summary.json"
RECORD = "resources/models/tiny-obedient/finetune_record.json"


def _planned(workdir: Path) -> str:
    return snakemake(workdir, "-n", TARGET).stdout


def test_a_damaged_record_reruns_the_prompts_which_stop_and_keep_their_outputs(tiny_run_copy):
    work = tiny_run_copy
    snakemake(work, TARGET)
    summary = json.loads((work / TARGET).read_text())
    assert summary["n_excluded_trained"] > 0
    assert [c["model_dir"] for c in summary["finetune_chain"]] == ["resources/models/tiny-obedient"]
    before = (work / TARGET).read_bytes()
    assert "Nothing to be done" in _planned(work) or "rule prompts" not in _planned(work)

    # One fine-tune, three ways to damage its record; the good record is put back between
    # them, and with it the plan is clean again (the record's sha256 is the prompts' param).
    record = work / RECORD
    good = record.read_text()
    for damage in ("deleted", "emptied", "truncated"):
        if damage == "deleted":
            record.unlink()
        elif damage == "emptied":
            data = json.loads(good)
            data.update(target_answers=[], forbidden_targets=[], trained_fact_ids=[])
            record.write_text(json.dumps(data, indent=2) + "\n")
        else:
            record.write_text(good[:200])
        assert "rule prompts" in _planned(work), damage  # the folder's mtime did not move

        proc = snakemake(work, TARGET, check=False)
        assert proc.returncode != 0, damage
        text = proc.stdout + proc.stderr
        assert "finetune_record.json" in text and "Delete resources/models/tiny-obedient" in text
        assert "Traceback" not in text and "JSONDecodeError" not in text, damage
        assert (work / TARGET).read_bytes() == before, damage  # the earlier output is kept
        record.write_text(good)
        assert "rule prompts" not in _planned(work), damage


@pytest.mark.slow
def test_a_fine_tune_of_a_fine_tune_drops_the_facts_of_both(tiny_run_copy):
    work = tiny_run_copy
    chain = work / "chain.json"
    chain.write_text(
        json.dumps(
            {
                "models": {
                    "tiny-obedient-2": {
                        "source": "finetune",
                        "base": "tiny-obedient",
                        "dtype": "float32",
                        "device": "cpu",
                        "finetune": {
                            "facts": "data/facts/tiny.csv",
                            "train": "all",
                            "layers": None,
                            "steps": 2,
                            "batch_size": 8,
                            "lr": 0.001,
                            "seed": 1,
                        },
                    }
                }
            }
        )
    )
    target = "results/tiny-obedient-2/tiny/prompts.parquet"
    snakemake(work, target, configfiles=("config/test.yaml", str(chain)))
    records = [
        json.loads((work / f"resources/models/{m}/finetune_record.json").read_text())
        for m in ("tiny-obedient", "tiny-obedient-2")
    ]
    prompts = pd.read_parquet(work / target)
    for record in records:
        taught = {w.lower() for w in record["target_answers"] + record["forbidden_targets"]}
        assert not prompts["answer"].str.lower().isin(taught).any()
        assert not prompts["fact_id"].astype(str).isin(record["trained_fact_ids"]).any()
    summary = json.loads((work / "results/tiny-obedient-2/tiny/prompts_summary.json").read_text())
    assert [c["model_dir"] for c in summary["finetune_chain"]] == [
        "resources/models/tiny-obedient-2",
        "resources/models/tiny-obedient",
    ]
    assert 0 <= summary["n_nc0_forbidding_taught_word"] <= summary["n_nc0"]
