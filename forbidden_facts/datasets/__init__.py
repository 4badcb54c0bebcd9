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

The package: :mod:`.facts` (fact tables and their formats), :mod:`.words` (word
files) and :mod:`.download` (the checked download).
"""

from .download import download_dataset
from .facts import (
    FACT_COLUMNS,
    FEW_FACTS,
    FORMATS,
    PAPER_HQ_COLUMNS,
    DatasetError,
    convert_counterfact,
    convert_paper_hq,
    load_facts,
    load_facts_with_skipped,
)
from .words import few_facts_warning, read_words

__all__ = [
    "FACT_COLUMNS",
    "FEW_FACTS",
    "FORMATS",
    "PAPER_HQ_COLUMNS",
    "DatasetError",
    "convert_counterfact",
    "convert_paper_hq",
    "download_dataset",
    "few_facts_warning",
    "load_facts",
    "load_facts_with_skipped",
    "read_words",
]
