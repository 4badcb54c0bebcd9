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
import hashlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_path

log = logging.getLogger(__name__)

FACT_COLUMNS = ["fact_id", "relation", "prefix", "answer", "wrong_answer"]

_FIX = (
    "set datasets.<name>.path in config/config.yaml to a .csv with columns "
    f"{', '.join(FACT_COLUMNS)} or a CounterFact .json"
)
_CHUNK = 1 << 20


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or malformed; the message says how to fix it."""


# ---------------------------------------------------------------------------
# loading


def load_facts(path: str | os.PathLike) -> pd.DataFrame:
    """Load a fact table from our CSV format or CounterFact's JSON format.

    The format is chosen by the extension: ``.csv`` must have the columns
    ``FACT_COLUMNS`` (extra columns are ignored), no empty field and unique
    ``fact_id``; ``.json`` is a CounterFact list of records, converted by
    :func:`convert_counterfact` (malformed records are skipped with a warning).
    Surrounding whitespace of every field is stripped.

    Args:
        path: A ``.csv`` or ``.json`` file.

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
    return load_facts_with_skipped(path)[0]


def load_facts_with_skipped(path: str | os.PathLike) -> tuple[pd.DataFrame, list[dict]]:
    """Like :func:`load_facts`, and also return the skipped malformed records.

    Returns:
        (facts, skipped), where skipped lists ``{"case_id", "reason"}`` for each
        malformed CounterFact record (always empty for CSV).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    skipped: list[dict] = []
    if suffix not in (".csv", ".json"):
        raise DatasetError(
            f"{path}: unknown dataset extension {path.suffix or '(none)'!r}; {_FIX}."
        )
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; {_FIX}.")
    if suffix == ".csv":
        facts = _read_csv(path)
    else:
        facts, skipped = convert_counterfact(_read_json(path), source=str(path))
    if facts.empty:
        raise DatasetError(f"{path}: the file holds no usable facts; {_FIX}.")
    return facts, skipped


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DatasetError(f"{path}: the file is empty (no header line); {_FIX}.")
            header = [h.strip() for h in header]
            reader.fieldnames = header
            missing = [c for c in FACT_COLUMNS if c not in header]
            if missing:
                raise DatasetError(
                    f"{path}: missing column(s) {', '.join(missing)} in the header line "
                    f"(found {', '.join(header)}); {_FIX}."
                )
            rows = []
            for row in reader:
                # A row with fewer fields than the header gets None for the rest.
                values = {c: (row.get(c) or "").strip() for c in FACT_COLUMNS}
                empty = [c for c, v in values.items() if not v]
                if empty:
                    raise DatasetError(
                        f"{path}, line {reader.line_num}: empty field(s) {', '.join(empty)}; "
                        f"every fact needs all of {', '.join(FACT_COLUMNS)} (fix the line, or "
                        f"{_FIX})."
                    )
                rows.append(values)
    except (csv.Error, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot parse the CSV ({err}); {_FIX}.") from err
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
# download


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download_counterfact(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    timeout: float = 60,
    *,
    name: str = "counterfact",
    urlopen: Callable[..., Any] = urllib.request.urlopen,
) -> dict:
    """Download a CounterFact-format JSON file to `dest`, atomically, checking its sha256.

    The body is streamed into a temporary file beside `dest` and renamed into
    place only when complete and (if `sha256` is given) verified, so a failed
    download never leaves a partial or wrong `dest`.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: Where to write the file.
        sha256: Expected hex sha256, or None to accept any content.
        timeout: Seconds to wait for the server.
        name: The dataset's name in config/config.yaml, for messages.
        urlopen: The opener (``urllib.request.urlopen``); injectable for tests.

    Returns:
        ``{"url": url, "sha256": <hex of what arrived>, "bytes": <size>}``.

    Raises:
        DatasetError: The URL cannot be reached, or the checksum differs.
    """
    dest = Path(dest)
    digest = hashlib.sha256()
    size = 0
    try:
        response = urlopen(url, timeout=timeout)
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections, bad URLs
        raise _unreachable(url, dest, name, err) from err
    with response, atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:  # dropped mid-transfer
                    raise _unreachable(url, dest, name, err) from err
                if not block:
                    break
                digest.update(block)
                out.write(block)
                size += len(block)
        got = digest.hexdigest()
        if sha256 is not None and got.lower() != sha256.strip().lower():
            raise DatasetError(
                f"{url}: sha256 mismatch for the download to {dest}: expected {sha256}, got "
                f"{got} ({size} bytes). The file changed upstream or the download is corrupt. "
                f"If you trust the new file, update datasets.{name}.sha256 in "
                f"config/config.yaml to {got} (or delete the key to skip the check)."
            )
    log.info("downloaded %s to %s (%d bytes, sha256 %s)", url, dest, size, got)
    return {"url": url, "sha256": got, "bytes": size}


def _unreachable(url: str, dest: Path, name: str, err: BaseException) -> DatasetError:
    reason = getattr(err, "reason", None) or err
    if isinstance(err, urllib.error.HTTPError):
        reason = f"HTTP {err.code} {reason}"
    return DatasetError(
        f"The URL {url} could not be reached ({type(err).__name__}: {reason}). This machine may "
        f"have no network access, or the server may be down. Download the file by hand on a "
        f"machine with network (e.g. `curl -L -o {dest.name} {url}`), copy it here, and set "
        f"datasets.{name}.path in config/config.yaml to the local file (instead of "
        f"datasets.{name}.url)."
    )
