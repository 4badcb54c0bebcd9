"""Word files (irrelevant words) and the warning for too few facts."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .facts import FEW_FACTS, DatasetError, control_text


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
    for n, word in enumerate(words, start=2 if path.suffix.lower() == ".csv" else 1):
        marker = control_text(word)
        if marker:
            raise DatasetError(
                f"{path}, line {n}: the word {word.strip()!r} holds {marker!r}, text that a "
                "chat template gives a meaning; remove that line (a word is plain text)."
            )
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
