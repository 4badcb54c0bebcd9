"""Fact tables: our CSV format, CounterFact's JSON and the paper's high-quality CSV."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import artifacts

log = logging.getLogger("forbidden_facts.datasets")

FACT_COLUMNS = list(artifacts.FACT_COLUMNS)  # declared in forbidden_facts/artifacts/
PAPER_HQ_COLUMNS = ["question", "answer", "type"]
FORMATS = ("csv", "counterfact", "paper_hq")
# Below this many facts, means, intervals and N* over facts say little.
FEW_FACTS = 20

_FIX = (
    "set datasets.<name>.path in config/config.yaml to a .csv with columns "
    f"{', '.join(FACT_COLUMNS)} or a CounterFact .json (or set datasets.<name>.format: "
    f"paper_hq for a CSV with columns {', '.join(PAPER_HQ_COLUMNS)})"
)


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or malformed; the message says how to fix it."""


# Text that chat templates give a meaning: a fact or word holding it would end the
# user's turn, open a system prompt or close the sequence inside a prompt.
CONTROL_TEXT = re.compile(
    r"\[/?INST\]|<</?SYS>>|</?s>|<\|[^|<>\s]{1,40}\|>|</?(?:start|end)_of_turn>"
    r"|<(?:bos|eos|pad|unk)>|\[/?(?:SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS)\]",
    re.IGNORECASE,
)


def control_text(text: str, extra: Sequence[str] = ()) -> str | None:
    """The first chat-template control text in `text` (or one of `extra`), else None.

    Example:
        >>> control_text("The capital of France is [/INST] Paris")
        '[/INST]'
    """
    found = CONTROL_TEXT.search(text)
    if found:
        return found.group(0)
    return next((tok for tok in extra if tok and tok in text), None)


# ---------------------------------------------------------------------------
# loading


def load_facts(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Load a fact table from our CSV format, CounterFact's JSON or the paper's CSV.

    The format is `fmt` (a dataset entry's ``format`` key) or, when None, chosen
    by the extension: ``.csv`` must have the columns ``FACT_COLUMNS`` (extra
    columns are ignored), no empty field, unique ``fact_id`` and a wrong answer
    that differs from the answer; ``.json`` is a CounterFact list of records,
    converted by :func:`convert_counterfact` (malformed records are skipped with
    a warning). ``fmt="paper_hq"`` reads the paper's hand-made facts
    (:func:`convert_paper_hq`). Surrounding whitespace of every field is
    stripped; a UTF-8 byte-order mark (Excel's CSV export) is accepted.

    Args:
        path: The dataset file.
        fmt: ``"csv"``, ``"counterfact"``, ``"paper_hq"`` or None (by extension).

    Returns:
        The fact table, columns ``FACT_COLUMNS``, all strings, in file order.

    Raises:
        DatasetError: The file is missing, has an unknown extension, cannot be
            parsed, breaks the format, or holds no facts.

    Example:
        >>> facts = load_facts("data/facts/curated.csv")  # doctest: +SKIP
        >>> list(facts.columns)  # doctest: +SKIP
        ['fact_id', 'relation', 'prefix', 'answer', 'wrong_answer']
    """
    return load_facts_with_skipped(path, fmt)[0]


def load_facts_with_skipped(
    path: str | os.PathLike, fmt: str | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """Like :func:`load_facts`, and also return the skipped records.

    Returns:
        (facts, skipped), where skipped lists ``{"case_id", "reason"}`` for each
        malformed CounterFact record, or ``{"row", "reason"}`` for each paper_hq
        row whose answer has a space (always empty for our CSV).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    skipped: list[dict] = []
    if fmt is None:
        fmt = {".csv": "csv", ".json": "counterfact"}.get(suffix)
    if fmt not in FORMATS:
        raise DatasetError(
            f"{path}: unknown dataset extension {path.suffix or '(none)'!r}; {_FIX}."
        )
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; {_FIX}.")
    if fmt == "csv":
        facts = _read_csv(path)
    elif fmt == "paper_hq":
        facts, skipped = convert_paper_hq(_read_table(path, PAPER_HQ_COLUMNS), source=str(path))
    else:
        facts, skipped = convert_counterfact(_read_json(path), source=str(path))
    if facts.empty:
        raise DatasetError(f"{path}: the file holds no usable facts; {_FIX}.")
    if fmt != "csv":  # our CSV is checked line by line in _read_table
        check_plain_text(facts, [], [], str(path))
    return facts, skipped


def check_plain_text(
    facts: pd.DataFrame,
    words: Sequence[str],
    special_tokens: Sequence[str],
    source: str,
    words_source: str = "the word file",
) -> None:
    """Refuse a fact field or a word that holds template control text or a special token.

    `special_tokens` are the model tokenizer's own (``all_special_tokens`` and the added
    special tokens), which differ between families; `source` names the dataset file.

    Raises:
        DatasetError: Naming the fact_id (or the word), the column and the text found.
    """
    extra = sorted({t for t in special_tokens if t and t.strip()}, key=len, reverse=True)
    for column in ("prefix", "answer", "wrong_answer"):
        if column not in facts:
            continue
        for fact_id, value in zip(facts["fact_id"], facts[column].astype(str), strict=True):
            marker = control_text(value, extra)
            if marker:
                raise DatasetError(
                    f"{source}: fact {fact_id!r}, column {column}, holds {marker!r}, which the "
                    "model's tokenizer or chat template reads as control text (it would end "
                    "the turn or the sequence inside the prompt). Remove it from that fact; "
                    "a fact is plain text."
                )
    for word in words:
        marker = control_text(word, extra)
        if marker:
            raise DatasetError(
                f"{words_source}: the word {word!r} holds {marker!r}, which the model's "
                "tokenizer reads as control text; remove it from that file."
            )


def _read_table(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV as stripped strings; the header must name `columns`, no field empty.

    Each row also carries ``_line``, its line number in the file, for messages.
    """
    try:
        # utf-8-sig drops the byte-order mark Excel writes before the first header.
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DatasetError(f"{path}: the file is empty (no header line); {_FIX}.")
            header = [h.strip() for h in header]
            reader.fieldnames = header
            missing = [c for c in columns if c not in header]
            if missing:
                raise DatasetError(
                    f"{path}: missing column(s) {', '.join(missing)} in the header line "
                    f"(found {', '.join(header)}); {_FIX}."
                )
            rows = []
            for row in reader:
                if row.get(None):
                    # DictReader puts the fields beyond the header's under the key None.
                    n = len(header) + len(row[None])
                    raise DatasetError(
                        f"{path}, line {reader.line_num}: {n} fields, but the header has "
                        f"{len(header)}: a field holds an unquoted comma, so the later fields "
                        "would shift (an answer would be read from the wrong column). Put "
                        'that field in double quotes ("The capital of X, Y, is"), or remove '
                        "the comma."
                    )
                # A row with fewer fields than the header gets None for the rest.
                values = {c: (row.get(c) or "").strip() for c in columns}
                for c, v in values.items():
                    marker = control_text(v)
                    if marker:
                        raise DatasetError(
                            f"{path}, line {reader.line_num}: column {c} holds {marker!r}, "
                            "text that a chat template gives a meaning (it would end the "
                            "turn or the sequence inside the prompt). Remove it from that "
                            "line; a fact is plain text."
                        )
                empty = [c for c, v in values.items() if not v]
                if empty:
                    raise DatasetError(
                        f"{path}, line {reader.line_num}: empty field(s) {', '.join(empty)}; "
                        f"every fact needs all of {', '.join(columns)} (fix the line, or "
                        f"{_FIX})."
                    )
                rows.append({**values, "_line": reader.line_num})
    except (csv.Error, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot parse the CSV ({err}); {_FIX}.") from err
    return rows


def _read_csv(path: Path) -> pd.DataFrame:
    rows = _read_table(path, FACT_COLUMNS)
    for row in rows:
        # The metric matches answers case-insensitively: "Paris" vs "paris" is no nc0.
        if row["answer"].lower() == row["wrong_answer"].lower():
            raise DatasetError(
                f"{path}, line {row['_line']}: fact {row['fact_id']!r} has wrong_answer equal "
                f"to its answer ({row['answer']!r}), so its c and nc0 prompts would forbid the "
                "same word; set wrong_answer to another answer of the same relation, or "
                "delete the line."
            )
    facts = pd.DataFrame(rows, columns=FACT_COLUMNS).astype(str)
    dup = facts["fact_id"][facts["fact_id"].duplicated()].unique().tolist()
    if dup:
        raise DatasetError(
            f"{path}: duplicate fact_id(s) {', '.join(dup[:10])}"
            f"{' ...' if len(dup) > 10 else ''}; every fact_id must be unique."
        )
    return facts


def _read_json(path: Path) -> list:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path}, line {err.lineno}: not valid JSON ({err.msg}); the file may be truncated "
            f"(download it again) or not CounterFact; {_FIX}."
        ) from err
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err}); {_FIX}.") from err
    if not isinstance(records, list):
        raise DatasetError(
            f"{path}: expected a JSON list of CounterFact records, got a "
            f"{type(records).__name__}; {_FIX}."
        )
    return records


# ---------------------------------------------------------------------------
# CounterFact


def convert_counterfact(
    records: Sequence[Any], source: str = "<memory>"
) -> tuple[pd.DataFrame, list[dict]]:
    """Convert CounterFact records into the fact table.

    Each record's ``requested_rewrite`` gives one fact: ``fact_id`` is
    ``str(case_id)``, ``prefix`` the prompt with the subject filled in,
    ``answer`` the true target, ``wrong_answer`` the counterfactual target and
    ``relation`` the Wikidata relation id. Targets lose their surrounding
    whitespace (CounterFact stores " Paris"). Multi-token answers are kept; the
    prompts stage decides which answers it can use.

    Args:
        records: The parsed CounterFact JSON list.
        source: Name of the file the records came from, for messages.

    Returns:
        The fact table in record order, and the skipped records as
        ``{"case_id": ..., "reason": ...}`` (``case_id`` is None when the record
        has none). Each skipped record is also logged as a warning.

    Example:
        >>> rec = {"case_id": 0, "requested_rewrite": {
        ...     "prompt": "The mother tongue of {} is", "relation_id": "P103",
        ...     "subject": "Danielle Darrieux", "target_new": {"str": "English"},
        ...     "target_true": {"str": "French"}}}
        >>> facts, skipped = convert_counterfact([rec])
        >>> facts.iloc[0]["prefix"], facts.iloc[0]["answer"], skipped
        ('The mother tongue of Danielle Darrieux is', 'French', [])
    """
    rows: list[dict[str, str]] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    for index, record in enumerate(records):
        case_id = record.get("case_id") if isinstance(record, dict) else None
        fact, reason = _counterfact_fact(record, index)
        if fact is not None and fact["fact_id"] in seen:
            fact, reason = None, f"duplicate case_id {case_id} (an earlier record has it)"
        if fact is None:
            if isinstance(case_id, bool) or not isinstance(case_id, int | str):
                case_id = None
            skipped.append({"case_id": case_id, "reason": reason})
            log.warning(
                "%s: skipping CounterFact record #%d (case_id=%s): %s",
                source,
                index,
                case_id,
                reason,
            )
            continue
        seen.add(fact["fact_id"])
        rows.append(fact)
    facts = pd.DataFrame(rows, columns=FACT_COLUMNS).astype(str)
    return facts, skipped


def _counterfact_fact(record: Any, index: int) -> tuple[dict[str, str] | None, str]:
    """One fact from one record, or None and why the record is unusable."""
    if not isinstance(record, dict):
        return None, f"record #{index} is a {type(record).__name__}, not an object"
    case_id = record.get("case_id")
    if case_id is None:
        return None, f"record #{index} has no case_id"
    if (
        isinstance(case_id, bool)
        or not isinstance(case_id, int | str)
        or str(case_id).strip() == ""
    ):
        return None, f"case_id must be an integer, got {case_id!r}"
    rewrite = record.get("requested_rewrite")
    if not isinstance(rewrite, dict):
        return None, "missing or malformed 'requested_rewrite'"
    prompt = rewrite.get("prompt")
    if not isinstance(prompt, str):
        return None, "missing or non-string 'requested_rewrite.prompt'"
    if "{}" not in prompt:
        return None, f"prompt {prompt!r} has no '{{}}' placeholder for the subject"
    subject = rewrite.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        return None, "missing or empty 'requested_rewrite.subject'"
    relation = rewrite.get("relation_id")
    if not isinstance(relation, str) or not relation.strip():
        return None, "missing or empty 'requested_rewrite.relation_id'"
    targets = {}
    for key in ("target_true", "target_new"):
        target = rewrite.get(key)
        if not isinstance(target, dict):
            return None, f"missing or malformed 'requested_rewrite.{key}'"
        text = target.get("str")
        if not isinstance(text, str) or not text.strip():
            return None, f"missing or empty 'requested_rewrite.{key}.str'"
        targets[key] = text.strip()
    if targets["target_true"] == targets["target_new"]:
        return None, f"target_new equals target_true ({targets['target_true']!r})"
    # str.format would choke on other braces in the prompt; only "{}" is the slot.
    prefix = prompt.replace("{}", subject.strip()).strip()
    fact = {
        "fact_id": str(case_id).strip(),
        "relation": relation.strip(),
        "prefix": prefix,
        "answer": targets["target_true"],
        "wrong_answer": targets["target_new"],
    }
    return fact, ""


# ---------------------------------------------------------------------------
# the paper's hand-made facts


def convert_paper_hq(
    rows: Sequence[dict[str, Any]], source: str = "<memory>"
) -> tuple[pd.DataFrame, list[dict]]:
    """Convert the paper's hand-made facts (columns question, answer, type) into the fact table.

    The authors' conversion: ``question`` is the prefix, ``type`` the relation;
    rows whose answer contains a space are dropped; then, with ``answers`` the
    unique answers of the row's type in file order, the row at index ``i``
    (counted after the drop, over the whole table) gets the wrong answer
    ``[a for a in answers if a != answer][i % (len(answers) - 1)]``.
    ``fact_id`` is ``hq-<row>``, the row's 0-based position among the file's
    data rows (stable, and unique even where the file repeats a fact).

    Args:
        rows: The file's rows as dicts (extra keys are ignored).
        source: Name of the file, for messages.

    Returns:
        The fact table in file order, and the dropped rows as
        ``{"row": ..., "reason": ...}``.

    Raises:
        DatasetError: A type has a single distinct answer, so no wrong answer exists.

    Example:
        >>> rows = [{"question": "Messi plays", "answer": "football", "type": "sport"},
        ...         {"question": "Federer plays", "answer": "tennis", "type": "sport"}]
        >>> convert_paper_hq(rows)[0]["wrong_answer"].tolist()
        ['tennis', 'football']
    """
    kept: list[dict[str, str]] = []
    skipped: list[dict] = []
    for index, row in enumerate(rows):
        answer = str(row["answer"])
        if " " in answer:
            skipped.append({"row": index, "reason": f"answer {answer!r} contains a space"})
            continue
        kept.append(
            {
                "fact_id": f"hq-{index:03d}",
                "relation": str(row["type"]),
                "prefix": str(row["question"]),
                "answer": answer,
            }
        )
    if skipped:
        log.info("%s: dropped %d rows whose answer contains a space", source, len(skipped))
    answers: dict[str, list[str]] = {}
    for fact in kept:
        group = answers.setdefault(fact["relation"], [])
        if fact["answer"] not in group:
            group.append(fact["answer"])
    for i, fact in enumerate(kept):
        group = answers[fact["relation"]]
        if len(group) < 2:
            raise DatasetError(
                f"{source}: type {fact['relation']!r} has a single answer "
                f"({fact['answer']!r}), so its facts have no wrong answer of the same type; "
                "add facts of that type with other answers, or delete its rows."
            )
        others = [a for a in group if a != fact["answer"]]
        fact["wrong_answer"] = others[i % (len(group) - 1)]
    return pd.DataFrame(kept, columns=FACT_COLUMNS).astype(str), skipped
