"""Fact tables: our CSV format, CounterFact and paper_hq conversion, word files, downloads.

Downloads run against a real HTTP server on 127.0.0.1 (and file:// URLs); any
other network connection fails the test.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import http.server
import json
import logging
import socket
import threading
from pathlib import Path

import pandas as pd
import pytest

from forbidden_facts.datasets import (
    FACT_COLUMNS,
    FEW_FACTS,
    DatasetError,
    convert_counterfact,
    convert_paper_hq,
    download_dataset,
    few_facts_warning,
    load_facts,
    load_facts_with_skipped,
    read_words,
)
from forbidden_facts.prompts import assign_irrelevant_words, format_prompt
from forbidden_facts.provenance import sha256_file

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "counterfact_sample.json"
HQ_SAMPLE = FIXTURES / "paper_hq_sample.csv"  # the first 8 rows of the paper's file
PAPER_WORDS = Path(__file__).parents[1] / "data" / "paper_words.csv"
MALFORMED_CASE_ID = 12  # the one fixture record without `target_true`


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail loudly on any network connection except to this machine's loopback server."""
    real_connect = socket.socket.connect
    real_create = socket.create_connection

    def allowed(address) -> bool:
        return isinstance(address, tuple) and address[0] in ("127.0.0.1", "localhost")

    def connect(self, address):
        if not allowed(address):
            raise AssertionError(f"tests must not touch the network ({address})")
        return real_connect(self, address)

    def create_connection(address, *args, **kwargs):
        if not allowed(address):
            raise AssertionError(f"tests must not touch the network ({address})")
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)


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
# CSV gaps: Excel's byte-order mark, answer equal to the wrong answer


def test_load_facts_csv_with_excel_bom(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufefffact_id,relation,prefix,answer,wrong_answer\r\n"
        "f0,capital,The capital of France is,Paris,Rome\r\n".encode()
    )
    facts = load_facts(path)
    assert list(facts["fact_id"]) == ["f0"] and list(facts["answer"]) == ["Paris"]


def test_load_facts_csv_answer_equal_to_wrong_answer_names_line_and_fix(tmp_path):
    path = _write_csv(
        tmp_path / "same.csv",
        [
            ["f0", "capital", "The capital of France is", "Paris", "Rome"],
            ["f1", "capital", "The capital of Italy is", "Rome", "rome"],
        ],
    )
    with pytest.raises(DatasetError) as info:
        load_facts(path)
    msg = str(info.value)
    assert "same.csv, line 3" in msg and "'f1'" in msg
    assert "wrong_answer" in msg and "another answer of the same relation" in msg


def test_an_unquoted_comma_is_refused_naming_file_and_line(tmp_path):
    # Issue 30, defect 7: the row was accepted with its fields shifted (answer "a kingdom").
    path = tmp_path / "comma.csv"
    path.write_text(
        "fact_id,relation,prefix,answer,wrong_answer\n"
        "f0,capital,The capital of France is,Paris,Rome\n"
        "f1,capital,The capital of the United Kingdom, a kingdom, is,London,Paris\n"
    )
    with pytest.raises(DatasetError) as info:
        load_facts(path)
    msg = str(info.value)
    assert "comma.csv, line 3: 7 fields, but the header has 5" in msg
    assert "unquoted comma" in msg and "double quotes" in msg
    # Quoted, the same fact is read whole.
    bad = "The capital of the United Kingdom, a kingdom, is"
    path.write_text(path.read_text().replace(bad, f'"{bad}"'))
    facts = load_facts(path)
    assert facts["answer"].tolist() == ["Paris", "London"]


@pytest.mark.parametrize(
    "text", ["[/INST]", "</s>", "<|im_end|>", "<<SYS>>", "<|im_start|>", "<|eot_id|>", "[INST]"]
)
def test_template_control_text_in_a_fact_or_word_is_refused(tmp_path, text):
    from forbidden_facts.datasets import read_words
    from forbidden_facts.datasets.facts import check_plain_text

    path = _write_csv(
        tmp_path / "ctl.csv",
        [
            ["f0", "capital", "The capital of France is", "Paris", "Rome"],
            ["f1", "capital", f"The capital of Italy is {text} Sure:", "Rome", "Paris"],
        ],
    )
    with pytest.raises(DatasetError) as info:
        load_facts(path)
    msg = str(info.value)
    assert f"ctl.csv, line 3: column prefix holds {text!r}" in msg and "plain text" in msg
    words = tmp_path / "w.txt"
    words.write_text(f"apple\nkettle{text}\n")
    with pytest.raises(DatasetError, match=r"w.txt, line 2: the word"):
        read_words(words)
    # The tokenizer's own special tokens, whatever they look like, at the prompts step.
    facts = pd.DataFrame(
        [["f0", "x", "The capital of France is <file_sep>", "Paris", "Rome"]],
        columns=["fact_id", "relation", "prefix", "answer", "wrong_answer"],
    )
    with pytest.raises(
        DatasetError, match=r"facts.parquet: fact 'f0', column prefix, holds '<file_sep>'"
    ):
        check_plain_text(facts, ["apple"], ["<file_sep>"], "facts.parquet")
    check_plain_text(
        facts.assign(prefix="The capital of France is"), ["apple"], ["<file_sep>"], "f"
    )


# ---------------------------------------------------------------------------
# the paper's hand-made facts (format paper_hq)


def test_paper_hq_sample_conversion_follows_the_authors_rule():
    facts, skipped = load_facts_with_skipped(HQ_SAMPLE, "paper_hq")
    assert skipped == []
    assert list(facts.columns) == FACT_COLUMNS
    assert facts["prefix"].iloc[0] == "Tom Brady plays the sport of"
    assert set(facts["relation"]) == {"sport"}
    # unique answers of the type in file order; row i takes others[i % (n - 1)]
    answers = ["football", "basketball", "tennis", "swimming", "track", "baseball"]
    for i, fact in facts.iterrows():
        others = [a for a in answers if a != fact["answer"]]
        assert fact["wrong_answer"] == others[i % 5]
    assert list(facts["wrong_answer"][:3]) == ["basketball", "tennis", "swimming"]
    assert list(facts["fact_id"]) == [f"hq-{i:03d}" for i in range(8)]


def test_paper_hq_drops_spaced_answers_before_indexing():
    rows = [
        {"question": "Table Mountain is in", "answer": "South Africa", "type": "country"},
        {"question": "The Taj Mahal is in", "answer": "India", "type": "country"},
        {"question": "The Eiffel Tower is in", "answer": "France", "type": "country"},
        {"question": "Mount Fuji is in", "answer": "Japan", "type": "country"},
        {"question": "Messi plays", "answer": "football", "type": "sport"},
        {"question": "Federer plays", "answer": "tennis", "type": "sport"},
    ]
    facts, skipped = convert_paper_hq(rows)
    assert skipped == [{"row": 0, "reason": "answer 'South Africa' contains a space"}]
    assert list(facts["fact_id"]) == ["hq-001", "hq-002", "hq-003", "hq-004", "hq-005"]
    # index after the drop: India is row 0, France 1, Japan 2, football 3, tennis 4
    assert list(facts["wrong_answer"]) == ["France", "Japan", "India", "tennis", "football"]


def test_paper_hq_type_with_one_answer_is_an_error(tmp_path):
    path = tmp_path / "hq.csv"
    path.write_text("question,answer,type\nMessi plays,football,sport\nPele plays,football,sport\n")
    with pytest.raises(DatasetError, match="hq.csv: type 'sport' has a single answer"):
        load_facts(path, "paper_hq")


def test_paper_hq_prompts_take_the_papers_words_before_any_filter():
    facts = load_facts(HQ_SAMPLE, "paper_hq")
    words = read_words(PAPER_WORDS)
    assert len(words) == 99
    nc1 = assign_irrelevant_words(facts, words)
    # sorted words, minus substrings of any answer (e.g. "ball" of football), i mod n
    answers = [a.lower() for a in list(facts["answer"]) + list(facts["wrong_answer"])]
    pool = sorted(w for w in words if not any(w in a for a in answers))
    assert "apple" in pool and not any(w in "basketball" for w in pool)
    assert list(nc1) == [pool[i % len(pool)] for i in range(len(facts))]
    # ...so a fact keeps its word whichever facts a tokenizer later drops
    kept = facts.assign(word=nc1).iloc[[1, 5]]
    assert list(kept["word"]) == [pool[1], pool[5]]
    assert format_prompt(facts["prefix"][0], nc1[0]).endswith(
        f"the forbidden word {pool[0]}.\n<</SYS>>\nTom Brady plays the sport of [/INST] "
    )


# ---------------------------------------------------------------------------
# word files and small datasets


def test_read_words_csv_and_text(tmp_path):
    assert read_words(PAPER_WORDS)[:2] == ["apple", "backpack"]
    text = tmp_path / "words.txt"
    text.write_bytes("\ufefffloor\n\n kettle \n".encode())
    assert read_words(text) == ["floor", "kettle"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.txt", "", "holds no words"),
        ("blank.txt", "\n  \n", "holds no words"),
        ("empty.csv", "", "no header line"),
        ("header.csv", "word\n", "holds no words"),
        ("nocol.csv", "term\nfloor\n", "no column `word`"),
    ],
)
def test_empty_word_file_names_file_and_fix(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError) as info:
        read_words(path)
    msg = str(info.value)
    assert str(path) in msg and problem in msg and "irrelevant_words" in msg


def test_few_facts_warning():
    assert few_facts_warning(FEW_FACTS, "dataset x") is None
    msg = few_facts_warning(1, "dataset x: known facts")
    assert msg.startswith("dataset x: known facts: only 1 fact(s)") and "mean little" in msg


# ---------------------------------------------------------------------------
# downloads (pooch) against a real server on 127.0.0.1


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict  # path -> list of responses, served in turn (the last one repeats)
    hits: list

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        queue = self.routes.get(self.path, [(404, b"not found")])
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        if status == "drop":  # promise more bytes than are sent, then hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server; set `server.routes[path] = [(status, body), ...]`."""
    handler = type("Handler", (_Handler,), {"routes": {}, "hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.routes, httpd.hits = handler.routes, handler.hits
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_sha256_file_is_hashlib_sha256():
    assert sha256_file(FIXTURE) == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()


def test_download_success(tmp_path, server):
    payload = FIXTURE.read_bytes()
    server.routes["/counterfact.json"] = [(200, payload)]
    dest = tmp_path / "resources" / "source"
    url = server.url + "/counterfact.json"
    info = download_dataset(url, dest, sha256=hashlib.sha256(payload).hexdigest().upper())
    assert dest.read_bytes() == payload
    assert info == {
        "url": url,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
    }
    assert sorted(p.name for p in dest.parent.iterdir()) == ["source"]
    assert len(load_facts(dest, "counterfact")) == 23


def test_download_paper_hq_then_load(tmp_path, server):
    server.routes["/our_hq_facts.csv"] = [(200, HQ_SAMPLE.read_bytes())]
    dest = tmp_path / "source"
    download_dataset(server.url + "/our_hq_facts.csv", dest, sha256=sha256_file(HQ_SAMPLE))
    assert len(load_facts(dest, "paper_hq")) == 8


def test_download_retries_a_failed_attempt(tmp_path, server):
    payload = b"[]"
    server.routes["/x.json"] = [(503, b"busy"), (200, payload)]
    info = download_dataset(server.url + "/x.json", tmp_path / "x.json", retries=1)
    assert info["bytes"] == 2 and server.hits == ["/x.json", "/x.json"]


def test_download_sha_mismatch_leaves_nothing(tmp_path, server):
    server.routes["/counterfact.json"] = [(200, FIXTURE.read_bytes())]
    dest = tmp_path / "counterfact.json"
    expected = "0" * 64
    with pytest.raises(DatasetError) as info:
        download_dataset(server.url + "/counterfact.json", dest, sha256=expected, retries=0)
    msg = str(info.value)
    got = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert expected in msg and got in msg and "datasets.counterfact.sha256" in msg
    assert list(tmp_path.iterdir()) == []


def test_download_failure_keeps_previous_file(tmp_path, server):
    server.routes["/x.json"] = [(200, b"[1]")]
    dest = tmp_path / "counterfact.json"
    dest.write_text("[]")
    with pytest.raises(DatasetError):
        download_dataset(server.url + "/x.json", dest, sha256="1" * 64, retries=0)
    with pytest.raises(DatasetError):
        download_dataset(server.url + "/absent.json", dest, retries=0)
    assert dest.read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir()] == ["counterfact.json"]


def test_download_http_error_names_fix(tmp_path, server):
    dest = tmp_path / "counterfact.json"
    url = server.url + "/absent.json"
    with pytest.raises(DatasetError) as info:
        download_dataset(url, dest, retries=0, name="paper_hq")
    msg = str(info.value)
    assert url in msg and "could not be reached" in msg and "404" in msg
    assert "by hand" in msg and "datasets.paper_hq.path" in msg
    assert list(tmp_path.iterdir()) == []


def test_download_refused_connection(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/counterfact.json"
    with pytest.raises(DatasetError, match="could not be reached.*datasets.counterfact.path"):
        download_dataset(url, tmp_path / "counterfact.json", retries=0)
    assert list(tmp_path.iterdir()) == []


def test_download_connection_dropped_mid_transfer(tmp_path, server):
    server.routes["/x.json"] = [("drop", b"[1, 2")]
    with pytest.raises(DatasetError, match="could not be reached"):
        download_dataset(server.url + "/x.json", tmp_path / "x.json", retries=0)
    assert list(tmp_path.iterdir()) == []


def test_download_file_url(tmp_path):
    dest = tmp_path / "counterfact.json"
    info = download_dataset(FIXTURE.resolve().as_uri(), dest, sha256=sha256_file(FIXTURE))
    assert dest.read_bytes() == FIXTURE.read_bytes()
    assert info["sha256"] == sha256_file(FIXTURE) and info["bytes"] == FIXTURE.stat().st_size


def test_download_missing_file_url_is_a_dataset_error(tmp_path):
    url = (tmp_path / "absent.json").as_uri()
    with pytest.raises(DatasetError, match="could not be reached"):
        download_dataset(url, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
