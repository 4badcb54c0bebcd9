"""Fact datasets: our CSV format, CounterFact's JSON format, and the CounterFact download.

Every stage downstream sees one fact table, a DataFrame with the string columns
``FACT_COLUMNS``. A fact is a prefix the model completes ("The mother tongue of
Danielle Darrieux is"), its true answer ("French"), a wrong answer of the same
relation ("English") and the relation id. CounterFact's ``target_new`` (the
counterfactual rewrite target) is exactly such a wrong answer, so its records
convert one to one.

Problems in an input file are reported as :class:`DatasetError`, whose message
names the file and says how to fix it; malformed CounterFact records are not
silently dropped but returned (and logged) as skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import artifacts
from .provenance import sha256_file

log = logging.getLogger(__name__)

FACT_COLUMNS = list(artifacts.FACT_COLUMNS)  # declared in forbidden_facts/artifacts.py
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
    return facts, skipped


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
                # A row with fewer fields than the header gets None for the rest.
                values = {c: (row.get(c) or "").strip() for c in columns}
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


# ---------------------------------------------------------------------------
# irrelevant words and small datasets


def read_words(path: str | os.PathLike) -> list[str]:
    """The irrelevant words of a word file, in file order.

    A ``.csv`` file needs a column ``word`` (the paper's list); any other file
    holds one word per line. Blank entries are ignored.

    Raises:
        DatasetError: The file is missing, has no ``word`` column, or holds no word.
    """
    path = Path(path)
    fix = (
        "put everyday words in it (a .csv with a column `word`, or one word per line), or point "
        "the config key `irrelevant_words` (or `toy.train_words`) at such a file"
    )
    if not path.is_file():
        raise DatasetError(f"{path}: no such word file; {fix}.")
    if path.suffix.lower() == ".csv":
        words = [row["word"] for row in _read_words_csv(path, fix)]
    else:
        try:
            words = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as err:
            raise DatasetError(f"{path}: not UTF-8 text ({err}); {fix}.") from err
    words = [w.strip() for w in words if w.strip()]
    if not words:
        raise DatasetError(f"{path}: the word file holds no words; {fix}.")
    return words


def _read_words_csv(path: Path, fix: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise DatasetError(f"{path}: the word file is empty (no header line); {fix}.")
            if "word" not in [h.strip() for h in reader.fieldnames]:
                raise DatasetError(
                    f"{path}: no column `word` in the header line (found "
                    f"{', '.join(reader.fieldnames)}); {fix}."
                )
            reader.fieldnames = [h.strip() for h in reader.fieldnames]
            return [{"word": row.get("word") or ""} for row in reader]
    except (csv.Error, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot parse the word file ({err}); {fix}.") from err


def few_facts_warning(n_facts: int, what: str) -> str | None:
    """A warning when statistics would rest on fewer than ``FEW_FACTS`` facts, else None.

    Args:
        n_facts: How many facts the statistics rest on.
        what: Which facts, for the message (e.g. "dataset curated: facts with a
            single-token answer").
    """
    if n_facts >= FEW_FACTS:
        return None
    return (
        f"{what}: only {n_facts} fact(s) (fewer than {FEW_FACTS}); means, confidence intervals "
        "and N* over so few facts mean little. Use a dataset with more facts (or raise or drop "
        "datasets.<name>.max_facts) before drawing conclusions."
    )


# ---------------------------------------------------------------------------
# download


def download_dataset(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    timeout: float = 60,
    *,
    name: str = "counterfact",
    retries: int = 3,
    progressbar: bool = True,
) -> dict:
    """Download a dataset file to `dest` with pooch, checking its sha256.

    pooch streams the body into a temporary file beside `dest`, checks the
    checksum, and only then moves it into place; it retries a failed download
    (network error or checksum mismatch) `retries` times. A failed download
    therefore never leaves a partial or wrong `dest`, and an earlier `dest` stays
    as it was. ``file://`` URLs are copied through the same path (pooch itself
    knows only http, ftp and doi).

    Args:
        url: ``http(s)://``, ``ftp://`` or ``file://`` URL.
        dest: Where to write the file.
        sha256: Expected hex sha256, or None to accept any content.
        timeout: Seconds to wait for the server.
        name: The dataset's name in config/config.yaml, for messages.
        retries: Extra attempts after a failed one.
        progressbar: Show a tqdm progress bar on stderr.

    Returns:
        ``{"url": url, "sha256": <hex of what arrived>, "bytes": <size>}``.

    Raises:
        DatasetError: The URL cannot be reached, or the checksum differs.
    """
    import pooch
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.strip().lower() if sha256 else None
    if urllib.parse.urlsplit(url).scheme == "file":
        downloader: Callable[..., Any] = _copy_file_url
    else:
        downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout)
    # A fresh hidden folder, so pooch never "reuses" an earlier file, and the
    # previous `dest` stays until the new file is complete and verified.
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as folder:
        # A pooch of one file: its registry pins the checksum, `urls` names the source.
        fetcher = pooch.create(
            path=folder,
            base_url="",
            registry={dest.name: f"sha256:{expected}" if expected else None},
            urls={dest.name: url},
            retry_if_failed=retries,
        )
        try:
            fetched = Path(fetcher.fetch(dest.name, downloader=downloader))
        except ValueError as err:  # pooch's checksum mismatch names the hash it got
            got = re.search(r"got ([0-9a-fA-F]{64})", str(err))
            raise _mismatch(url, dest, name, expected, got.group(1) if got else "?") from err
        except (OSError, requests.RequestException) as err:
            raise _unreachable(url, dest, name, err) from err
        got = sha256_file(fetched)
        size = fetched.stat().st_size
        os.replace(fetched, dest)
    log.info("downloaded %s to %s (%d bytes, sha256 %s)", url, dest, size, got)
    return {
        artifacts.Download.url: url,
        artifacts.Download.sha256: got,
        artifacts.Download.bytes: size,
    }


def _copy_file_url(url: str, output_file: str, pooch: Any) -> None:
    """A pooch downloader for ``file://`` URLs: copy the local file."""
    source = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    shutil.copyfile(source, output_file)


def _mismatch(url: str, dest: Path, name: str, expected: str | None, got: str) -> DatasetError:
    return DatasetError(
        f"{url}: sha256 mismatch for the download to {dest}: expected {expected}, got "
        f"{got}. The file changed upstream or the download is corrupt. "
        f"If you trust the new file, update datasets.{name}.sha256 in "
        f"config/config.yaml to {got} (or delete the key to skip the check)."
    )


def _unreachable(url: str, dest: Path, name: str, err: BaseException) -> DatasetError:
    reason = getattr(err, "reason", None) or err
    return DatasetError(
        f"The URL {url} could not be reached ({type(err).__name__}: {reason}). This machine may "
        f"have no network access, or the server may be down. Download the file by hand on a "
        f"machine with network (e.g. `curl -L -o {dest.name} {url}`), copy it here, and set "
        f"datasets.{name}.path in config/config.yaml to the local file (instead of "
        f"datasets.{name}.url)."
    )
