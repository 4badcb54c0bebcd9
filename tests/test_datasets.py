"""Fact tables: our CSV format, CounterFact conversion and the (offline) CounterFact download."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import urllib.error
from pathlib import Path

import pandas as pd
import pytest

from forbidden_facts.datasets import (
    FACT_COLUMNS,
    DatasetError,
    convert_counterfact,
    download_counterfact,
    file_sha256,
    load_facts,
)

FIXTURE = Path(__file__).parent / "fixtures" / "counterfact_sample.json"
MALFORMED_CASE_ID = 12  # the one fixture record without `target_true`


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def converted(records):
    return convert_counterfact(copy.deepcopy(records), source=str(FIXTURE))


# ---------------------------------------------------------------------------
# the fixture itself


def test_fixture_is_counterfact_shaped(records):
    assert len(records) >= 22
    keys = {
        "case_id",
        "pararel_idx",
        "requested_rewrite",
        "paraphrase_prompts",
        "neighborhood_prompts",
        "attribute_prompts",
        "generation_prompts",
    }
    assert all(set(r) == keys for r in records)
    case_ids = [r["case_id"] for r in records]
    assert len(set(case_ids)) == len(case_ids) and all(isinstance(c, int) for c in case_ids)
    broken = [r["case_id"] for r in records if "target_true" not in r["requested_rewrite"]]
    assert broken == [MALFORMED_CASE_ID]


# ---------------------------------------------------------------------------
# convert_counterfact


def test_converter_darrieux_record(converted):
    facts, _ = converted
    assert list(facts.columns) == FACT_COLUMNS
    row = facts.iloc[0].to_dict()
    assert row == {
        "fact_id": "0",
        "relation": "P103",
        "prefix": "The mother tongue of Danielle Darrieux is",
        "answer": "French",
        "wrong_answer": "English",
    }
    assert all(isinstance(v, str) for col in FACT_COLUMNS for v in facts[col])


def test_converter_strips_leading_spaces_and_keeps_multiword_answers(records, converted):
    facts, _ = converted
    assert records[7]["requested_rewrite"]["target_true"]["str"] == " New York City"
    by_id = facts.set_index("fact_id")
    assert by_id.loc["7", "answer"] == "New York City"
    assert by_id.loc["15", "wrong_answer"] == "New York City"
    assert by_id.loc["16", "answer"] == "United States of America"
    for col in ("answer", "wrong_answer", "prefix"):
        assert (facts[col] == facts[col].str.strip()).all()


def test_converter_skips_and_reports_malformed_record(records, caplog):
    with caplog.at_level(logging.WARNING, logger="forbidden_facts.datasets"):
        facts, skipped = convert_counterfact(copy.deepcopy(records), source="sample.json")
    assert len(skipped) == 1
    assert skipped[0]["case_id"] == MALFORMED_CASE_ID
    assert "target_true" in skipped[0]["reason"]
    assert str(MALFORMED_CASE_ID) not in set(facts["fact_id"])
    assert len(facts) == len(records) - 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"case_id={MALFORMED_CASE_ID}" in warnings[0].getMessage()
    assert "sample.json" in warnings[0].getMessage()


def test_converter_preserves_order(records, converted):
    facts, _ = converted
    expected = [str(r["case_id"]) for r in records if r["case_id"] != MALFORMED_CASE_ID]
    assert list(facts["fact_id"]) == expected


def test_converter_keeps_duplicate_subjects_as_separate_facts(converted):
    facts, _ = converted
    darrieux = facts[facts["prefix"].str.contains("Danielle Darrieux")]
    assert list(darrieux["fact_id"]) == ["0", "8"]
    assert list(darrieux["answer"]) == ["French", "France"]
    curie = facts[facts["prefix"].str.startswith("Marie Curie")]
    assert list(curie["answer"]) == ["physics", "chemistry"]


def _record(
    case_id=99, prompt="The capital of {} is", subject="France", true=" Paris", new=" Rome"
):
    return {
        "case_id": case_id,
        "requested_rewrite": {
            "prompt": prompt,
            "relation_id": "P36",
            "subject": subject,
            "target_true": {"str": true, "id": "Q90"},
            "target_new": {"str": new, "id": "Q220"},
        },
    }


def test_converter_substitutes_only_the_placeholder():
    facts, skipped = convert_counterfact([_record(prompt="In {} (a {country}), the capital is")])
    assert skipped == []
    assert facts.iloc[0]["prefix"] == "In France (a {country}), the capital is"


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: r["requested_rewrite"].update(prompt="The capital of France is"), "placeholder"),
        (lambda r: r["requested_rewrite"]["target_new"].update(str="   "), "target_new"),
        (lambda r: r["requested_rewrite"].update(target_true="Paris"), "target_true"),
        (lambda r: r["requested_rewrite"].pop("subject"), "subject"),
        (lambda r: r.pop("requested_rewrite"), "requested_rewrite"),
        (lambda r: r["requested_rewrite"].update(prompt=None), "prompt"),
    ],
)
def test_converter_reports_each_kind_of_malformed_record(mutate, reason, caplog):
    bad = _record(case_id=5)
    mutate(bad)
    with caplog.at_level(logging.WARNING, logger="forbidden_facts.datasets"):
        facts, skipped = convert_counterfact([_record(case_id=4), bad, _record(case_id=6)])
    assert list(facts["fact_id"]) == ["4", "6"]
    assert skipped == [{"case_id": 5, "reason": skipped[0]["reason"]}]
    assert reason in skipped[0]["reason"]
    assert "case_id=5" in caplog.text


def test_converter_reports_records_without_case_id_and_duplicates():
    no_id = _record()
    del no_id["case_id"]
    facts, skipped = convert_counterfact([_record(case_id=1), no_id, "junk", _record(case_id=1)])
    assert list(facts["fact_id"]) == ["1"]
    assert [s["case_id"] for s in skipped] == [None, None, 1]
    assert "duplicate" in skipped[2]["reason"]


def test_converter_of_nothing_has_the_columns():
    facts, skipped = convert_counterfact([])
    assert list(facts.columns) == FACT_COLUMNS and facts.empty and skipped == []


# ---------------------------------------------------------------------------
# load_facts


def test_load_facts_json_fixture(converted):
    facts = load_facts(FIXTURE)
    pd.testing.assert_frame_equal(facts, converted[0])


def _write_csv(path: Path, rows: list[list[str]], header=FACT_COLUMNS) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_load_facts_csv(tmp_path):
    path = _write_csv(
        tmp_path / "facts.csv",
        [
            ["f0", "capital", "The capital of France is", " Paris ", "Rome"],
            ["17", "landmark", "The Alamo is in the state of", "Texas", " Ohio"],
            ["f2", "nation", "Nairobi is the capital of", "Kenya", "NA"],
        ],
        header=[*FACT_COLUMNS, "note"],
    )
    facts = load_facts(path)
    assert list(facts.columns) == FACT_COLUMNS
    assert list(facts["fact_id"]) == ["f0", "17", "f2"]
    assert list(facts["answer"]) == ["Paris", "Texas", "Kenya"]
    # "NA" is a word, not a missing value.
    assert list(facts["wrong_answer"]) == ["Rome", "Ohio", "NA"]
    assert all(isinstance(v, str) for col in FACT_COLUMNS for v in facts[col])


def test_load_facts_missing_file(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_facts(tmp_path / "nowhere.csv")
    assert "nowhere.csv" in str(info.value) and "config" in str(info.value)


def test_load_facts_bad_extension(tmp_path):
    path = tmp_path / "facts.txt"
    path.write_text("fact_id,relation,prefix,answer,wrong_answer\n")
    with pytest.raises(DatasetError) as info:
        load_facts(path)
    assert "facts.txt" in str(info.value) and "config" in str(info.value)


def test_load_facts_csv_missing_column(tmp_path):
    path = _write_csv(
        tmp_path / "nowrong.csv",
        [["f0", "capital", "The capital of France is", "Paris"]],
        header=["fact_id", "relation", "prefix", "answer"],
    )
    with pytest.raises(DatasetError) as info:
        load_facts(path)
    assert "nowrong.csv" in str(info.value) and "wrong_answer" in str(info.value)


def test_load_facts_csv_empty_field_names_the_line(tmp_path):
    path = _write_csv(
        tmp_path / "holes.csv",
        [
            ["f0", "capital", "The capital of France is", "Paris", "Rome"],
            ["f1", "capital", "The capital of Italy is", "  ", "Paris"],
        ],
    )
    with pytest.raises(DatasetError) as info:
        load_facts(path)
    msg = str(info.value)
    assert "holes.csv" in msg and "line 3" in msg and "answer" in msg


def test_load_facts_csv_duplicate_ids(tmp_path):
    path = _write_csv(
        tmp_path / "dups.csv",
        [
            ["f0", "capital", "The capital of France is", "Paris", "Rome"],
            ["f0", "capital", "The capital of Italy is", "Rome", "Paris"],
        ],
    )
    with pytest.raises(DatasetError, match="duplicate fact_id.*f0") as info:
        load_facts(path)
    assert "dups.csv" in str(info.value)


def test_load_facts_unparsable_json(tmp_path):
    path = tmp_path / "truncated.json"
    path.write_text(FIXTURE.read_text()[:500])
    with pytest.raises(DatasetError) as info:
        load_facts(path)
    assert "truncated.json" in str(info.value) and "config" in str(info.value)


def test_load_facts_json_not_a_list(tmp_path):
    path = tmp_path / "object.json"
    path.write_text(json.dumps({"case_id": 0}))
    with pytest.raises(DatasetError, match="object.json.*list"):
        load_facts(path)


def test_load_facts_header_only_csv_is_an_error(tmp_path):
    path = _write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(DatasetError, match="empty.csv.*no usable facts"):
        load_facts(path)


# ---------------------------------------------------------------------------
# file_sha256 and download_counterfact


def test_file_sha256():
    assert file_sha256(FIXTURE) == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable, closable context manager."""


def fake_opener(payload: bytes, calls: list):
    def urlopen(url, timeout=None):
        calls.append((url, timeout))
        return FakeResponse(payload)

    return urlopen


def test_download_success(tmp_path):
    payload = FIXTURE.read_bytes()
    calls: list = []
    dest = tmp_path / "resources" / "counterfact.json"
    info = download_counterfact(
        "https://example.org/counterfact.json",
        dest,
        sha256=hashlib.sha256(payload).hexdigest().upper(),
        timeout=5,
        urlopen=fake_opener(payload, calls),
    )
    assert calls == [("https://example.org/counterfact.json", 5)]
    assert dest.read_bytes() == payload
    assert info == {
        "url": "https://example.org/counterfact.json",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
    }
    assert sorted(p.name for p in dest.parent.iterdir()) == ["counterfact.json"]
    assert len(load_facts(dest)) == 23


def test_download_sha_mismatch_leaves_nothing(tmp_path):
    dest = tmp_path / "counterfact.json"
    expected = "0" * 64
    with pytest.raises(DatasetError) as info:
        download_counterfact(
            "https://example.org/counterfact.json",
            dest,
            sha256=expected,
            urlopen=fake_opener(FIXTURE.read_bytes(), []),
        )
    msg = str(info.value)
    got = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert expected in msg and got in msg and "datasets.counterfact.sha256" in msg
    assert list(tmp_path.iterdir()) == []


def test_download_sha_mismatch_keeps_previous_file(tmp_path):
    dest = tmp_path / "counterfact.json"
    dest.write_text("[]")
    with pytest.raises(DatasetError):
        download_counterfact(
            "https://example.org/x.json", dest, sha256="1" * 64, urlopen=fake_opener(b"[1]", [])
        )
    assert dest.read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir()] == ["counterfact.json"]


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        TimeoutError("timed out"),
    ],
    ids=["urlerror", "timeout"],
)
def test_download_network_failure(tmp_path, error):
    def urlopen(url, timeout=None):
        raise error

    dest = tmp_path / "counterfact.json"
    url = "https://rome.baulab.info/data/dsets/counterfact.json"
    with pytest.raises(DatasetError) as info:
        download_counterfact(url, dest, urlopen=urlopen)
    msg = str(info.value)
    assert url in msg and "could not be reached" in msg
    assert "by hand" in msg and "datasets.counterfact.path" in msg
    assert list(tmp_path.iterdir()) == []


def test_download_connection_dropped_mid_transfer(tmp_path):
    class Dropping(FakeResponse):
        def read(self, n=-1):
            raise ConnectionResetError("connection reset by peer")

    dest = tmp_path / "counterfact.json"
    with pytest.raises(DatasetError, match="could not be reached"):
        download_counterfact(
            "https://example.org/x.json", dest, urlopen=lambda url, timeout=None: Dropping(b"")
        )
    assert list(tmp_path.iterdir()) == []


def test_download_file_url_through_real_urlopen(tmp_path):
    dest = tmp_path / "counterfact.json"
    info = download_counterfact(FIXTURE.resolve().as_uri(), dest, sha256=file_sha256(FIXTURE))
    assert dest.read_bytes() == FIXTURE.read_bytes()
    assert info["sha256"] == file_sha256(FIXTURE) and info["bytes"] == FIXTURE.stat().st_size


def test_download_missing_file_url_is_a_dataset_error(tmp_path):
    url = (tmp_path / "absent.json").as_uri()
    with pytest.raises(DatasetError, match="could not be reached"):
        download_counterfact(url, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
