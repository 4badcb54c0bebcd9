"""The artifact contract: the columns of every parquet and the keys of every summary JSON.

Every artifact the workflow writes is declared here once, and the writers (the steps
and the library functions they call), the readers (figures, tables, the model card)
and the tests import the declaration instead of spelling a column or key again.

Parquet files are declared by their columns (tuples of names). A summary JSON is a
class whose attributes are its keys: each attribute is a `Key`, a ``str`` whose text
is the key in the file (so a writer uses it directly, ``{Attribution.n_star: ...}``)
and whose attribute name is the name of the value in the paper. The paper's numbers
of a run are read from these classes by one rule (`Artifact.numbers`): every key
declared ``number=True`` gives the value of that name, and its LaTeX macro is the
CamelCase of the name (`forbidden_facts.tables_latex.slug`: ``k_ninety`` ->
``\\KNinety``). A key that keeps an older text in the file (``k90``) is declared once,
beside the name the paper uses; renaming a key in the files means changing one string
in this module.

A `Key` may point below its top-level key: ``Key("total_effect_ci", 0)`` is the lower
end of the interval ``total_effect_ci``, ``Key("example", "answer")`` the answer of the
attack example. Below the top level a missing entry (an empty list, an example that
was not drawn) reads as None; a missing top-level key is an error naming the file and
the rule to rerun, unless the key is declared ``optional``.

Example:
    >>> Attribution.k_ninety, Attribution.k_ninety.name
    ('k90', 'k_ninety')
    >>> Attribution.numbers({**dict.fromkeys(Attribution.required()), "k90": 4})["k_ninety"]
    4
"""

from __future__ import annotations

from .columns import (
    ATTACK_ATTENTION_COLUMNS,
    ATTACK_COLUMNS,
    ATTACK_PREDICTION_COLUMNS,
    ATTRIBUTION_COLUMNS,
    COMPONENT_COLUMNS,
    CURVE_COLUMNS,
    FACT_COLUMNS,
    FAITHFULNESS_CURVE_COLUMNS,
    HEAD_COLUMNS,
    INFERENCE_COLUMNS,
    PROMPT_COLUMNS,
    TOKEN_SEARCH_COLUMNS,
    TOTAL_EFFECT_COLUMNS,
)
from .keys import Artifact, Key
from .summaries import (
    RUN_NUMBERS,
    Attack,
    AttackContrast,
    AttackExample,
    Attribution,
    Card,
    ComponentShift,
    Download,
    FactsReport,
    Faithfulness,
    HeadGroups,
    Inference,
    Mechanism,
    Prompts,
    Provenance,
    Reference,
    number_names,
)

__all__ = [
    "Provenance",
    "FACT_COLUMNS",
    "PROMPT_COLUMNS",
    "INFERENCE_COLUMNS",
    "ATTRIBUTION_COLUMNS",
    "COMPONENT_COLUMNS",
    "CURVE_COLUMNS",
    "HEAD_COLUMNS",
    "ATTACK_COLUMNS",
    "ATTACK_ATTENTION_COLUMNS",
    "ATTACK_PREDICTION_COLUMNS",
    "TOKEN_SEARCH_COLUMNS",
    "TOTAL_EFFECT_COLUMNS",
    "FAITHFULNESS_CURVE_COLUMNS",
    "Artifact",
    "Key",
    "Download",
    "FactsReport",
    "Prompts",
    "Inference",
    "Attribution",
    "AttackExample",
    "AttackContrast",
    "Attack",
    "HeadGroups",
    "Mechanism",
    "Card",
    "ComponentShift",
    "Faithfulness",
    "Reference",
    "RUN_NUMBERS",
    "number_names",
]
