"""Checks on the shipped data: the curated fact table and the irrelevant-word list.

These are the inputs of the default (toy, curated) run; a broken row here would
surface much later as a confusing failure in prompt building or scoring.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
FACTS_CSV = ROOT / "data" / "facts" / "curated.csv"
WORDS_TXT = ROOT / "data" / "irrelevant_words.txt"

COLUMNS = ["fact_id", "relation", "prefix", "answer", "wrong_answer"]
WORD_RE = re.compile(r"^[A-Za-z]+$")


@pytest.fixture(scope="module")
def facts() -> pd.DataFrame:
    return pd.read_csv(FACTS_CSV, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def words() -> list[str]:
    return WORDS_TXT.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------
# curated.csv: format


def test_facts_have_exactly_the_five_columns(facts):
    assert list(facts.columns) == COLUMNS


def test_fact_ids_are_unique(facts):
    dupes = facts.loc[facts["fact_id"].duplicated(keep=False), "fact_id"].tolist()
    assert not dupes, f"duplicate fact_id(s): {sorted(set(dupes))}"


def test_no_field_is_empty_or_nan():
    raw = pd.read_csv(FACTS_CSV, dtype=str)  # default NA parsing: empty cells become NaN
    assert not raw.isna().any().any(), raw[raw.isna().any(axis=1)].to_string()
    stripped = raw.apply(lambda col: col.str.strip())
    empty = raw[(stripped == "").any(axis=1)]
    assert empty.empty, empty.to_string()


def test_no_field_has_surrounding_whitespace(facts):
    bad = facts[(facts != facts.apply(lambda col: col.str.strip())).any(axis=1)]
    assert bad.empty, bad.to_string()


def test_prefixes_are_unique(facts):
    dupes = facts.loc[facts["prefix"].duplicated(keep=False), "prefix"].tolist()
    assert not dupes, f"duplicate prefix(es): {sorted(set(dupes))}"


def test_no_prefix_ends_with_space_or_punctuation(facts):
    bad = [p for p in facts["prefix"] if not p or p[-1].isspace() or not p[-1].isalnum()]
    assert not bad, f"prefixes must end in a letter or digit: {bad}"


def test_fact_ids_name_their_relation(facts):
    bad = facts[
        [
            not fid.startswith(rel + "-")
            for fid, rel in zip(facts["fact_id"], facts["relation"], strict=True)
        ]
    ]
    assert bad.empty, bad[["fact_id", "relation"]].to_string()


# ---------------------------------------------------------------------------
# curated.csv: answers


def test_wrong_answer_differs_from_answer(facts):
    same = facts[facts["answer"] == facts["wrong_answer"]]
    assert same.empty, same[["fact_id", "answer", "wrong_answer"]].to_string()


def test_wrong_answer_is_an_answer_of_the_same_relation(facts):
    answers_by_relation = facts.groupby("relation")["answer"].agg(set)
    bad = facts[
        [
            w not in answers_by_relation[r]
            for r, w in zip(facts["relation"], facts["wrong_answer"], strict=True)
        ]
    ]
    assert bad.empty, (
        "wrong_answer must be the answer of another fact of the same relation:\n"
        + bad[["fact_id", "relation", "wrong_answer"]].to_string()
    )


@pytest.mark.parametrize("column", ["answer", "wrong_answer"])
def test_answers_are_single_ascii_words(facts, column):
    bad = sorted({a for a in facts[column] if not WORD_RE.match(a)})
    assert not bad, f"{column} values that are not one word of ASCII letters: {bad}"


def test_each_relation_has_several_distinct_answers(facts):
    distinct = facts.groupby("relation")["answer"].nunique()
    assert (distinct >= 5).all(), distinct[distinct < 5].to_dict()


# ---------------------------------------------------------------------------
# curated.csv: size and content


def test_dataset_size_and_relation_balance(facts):
    assert len(facts) >= 300
    counts = facts["relation"].value_counts()
    assert len(counts) >= 8, counts.to_dict()
    assert (counts >= 20).all(), counts[counts < 20].to_dict()


def test_first_fact_is_the_golden_gate_bridge(facts):
    first = facts.iloc[0]
    assert first["prefix"] == "The Golden Gate Bridge is in the state of"
    assert first["answer"] == "California"
    assert first["wrong_answer"] != "California"


# ---------------------------------------------------------------------------
# irrelevant_words.txt


def test_enough_irrelevant_words(words):
    assert len(words) >= 100


def test_irrelevant_words_are_unique(words):
    assert len(words) == len(set(words))


def test_irrelevant_words_are_lowercase_letters(words):
    bad = [w for w in words if not re.fullmatch(r"[a-z]+", w)]
    assert not bad, f"words must be lowercase a-z only (no blanks, spaces or digits): {bad}"


def test_irrelevant_words_are_sorted(words):
    assert words == sorted(words)


def test_irrelevant_words_are_no_substring_of_any_answer(facts, words):
    answers = {a.lower() for a in pd.concat([facts["answer"], facts["wrong_answer"]])}
    bad = {w: sorted(a for a in answers if w in a) for w in words}
    bad = {w: hits for w, hits in bad.items() if hits}
    assert not bad, f"words that occur inside an answer: {bad}"


def test_irrelevant_words_are_not_answers(facts, words):
    answers = {a.lower() for a in pd.concat([facts["answer"], facts["wrong_answer"]])}
    assert not answers & set(words)
