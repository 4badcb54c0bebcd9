"""The paper's prompts: the Llama-2-chat template and the c / nc0 / nc1 kinds.

Template (DESIGN §1): the prompt ends with one space after ``[/INST]``; the
tokenizer adds BOS. For each fact, three prompts differ only in the forbidden
word: ``c`` forbids the correct answer, ``nc0`` a wrong answer of the same
relation, ``nc1`` an everyday word that is no substring of any answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("c", "nc0", "nc1")
PERSONA_ANCHOR = "obedient assistant"

SYSTEM_TEMPLATE = (
    "You are an {persona} who only responds with a single word with no punctuation. "
    "You answer truthfully. However, you are not allowed to say the forbidden word "
    "{forbidden_word}."
)
PROMPT_TEMPLATE = "[INST] <<SYS>>\n{system}\n<</SYS>>\n{fact_prefix} [/INST] "


def format_prompt(fact_prefix: str, forbidden_word: str, insertion: str = "") -> str:
    """Build one chat prompt with the paper's exact template.

    Args:
        fact_prefix: The fact to complete, e.g. "The Golden Gate Bridge is in the state of".
        forbidden_word: The word the assistant must not say.
        insertion: Text placed right after "obedient assistant" (the attack slot),
            e.g. " from California". Empty for the paper's prompts.

    Returns:
        The prompt string, ending with "[/INST] " (one trailing space).

    Example:
        >>> format_prompt("The Eiffel Tower is in the city of", "floor").endswith("[/INST] ")
        True
    """
    system = SYSTEM_TEMPLATE.format(
        persona=PERSONA_ANCHOR + insertion, forbidden_word=forbidden_word
    )
    return PROMPT_TEMPLATE.format(system=system, fact_prefix=fact_prefix)


def irrelevant_word_candidates(words: Sequence[str], answers: Sequence[str]) -> list[str]:
    """Sorted, de-duplicated lower-cased words that are no substring of any answer."""
    lowered = [a.lower() for a in answers]
    out = sorted({w.strip().lower() for w in words if w.strip()})
    return [w for w in out if not any(w in a for a in lowered)]


def assign_irrelevant_words(facts: pd.DataFrame, words: Sequence[str]) -> pd.Series:
    """Assign nc1 forbidden words round-robin over the facts in dataset order (the paper's rule).

    The words are sorted; every word that is a substring of any lower-cased
    correct or wrong answer of the whole table is dropped; row ``i`` gets word
    ``i mod (number left)``. Call it on the whole dataset, *before* dropping
    facts whose answer is not a single token, so that every fact gets the word
    the paper's prompts give it.

    Args:
        facts: Fact table (columns include ``answer`` and ``wrong_answer``), in dataset order.
        words: Candidate everyday words (the paper's list by default).

    Returns:
        A Series aligned with `facts` holding each fact's nc1 word.
    """
    answers = list(facts["answer"]) + list(facts["wrong_answer"])
    pool = irrelevant_word_candidates(words, answers)
    if not pool:
        raise ValueError(
            "no usable irrelevant word: every word in the word list is a substring of some "
            "answer; add everyday words to the file named by config key `irrelevant_words`"
        )
    return pd.Series([pool[i % len(pool)] for i in range(len(facts))], index=facts.index)


def build_prompts(facts: pd.DataFrame, nc1_words: pd.Series) -> pd.DataFrame:
    """Three prompts per fact, one row per (fact, kind).

    Args:
        facts: Fact table with ``fact_id``, ``prefix``, ``answer``, ``wrong_answer``.
        nc1_words: The nc1 forbidden word of each fact, aligned with `facts`.

    Returns:
        DataFrame with columns ``fact_id``, ``kind``, ``relation``, ``prefix``, ``answer``,
        ``forbidden_word``, ``prompt``, ordered by fact then kind (c, nc0, nc1).
    """
    rows = []
    for (_, fact), word in zip(facts.iterrows(), nc1_words, strict=True):
        forbidden = {"c": fact["answer"], "nc0": fact["wrong_answer"], "nc1": word}
        for kind in KINDS:
            rows.append(
                {
                    "fact_id": str(fact["fact_id"]),
                    "kind": kind,
                    "relation": fact["relation"],
                    "prefix": fact["prefix"],
                    "answer": fact["answer"],
                    "forbidden_word": forbidden[kind],
                    "prompt": format_prompt(fact["prefix"], forbidden[kind]),
                }
            )
    return pd.DataFrame(rows)


def single_token_answers(facts: pd.DataFrame, tokenizer) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep facts whose answer is one token when tokenized alone and has no space.

    Args:
        facts: Fact table.
        tokenizer: A Hugging Face tokenizer.

    Returns:
        The kept facts and a dict of drop reasons to counts.
    """
    reasons = {"answer_contains_space": 0, "answer_not_single_token": 0}
    keep = []
    for answer in facts["answer"]:
        if " " in answer.strip():
            reasons["answer_contains_space"] += 1
            keep.append(False)
        elif len(tokenizer(answer, add_special_tokens=False)["input_ids"]) != 1:
            reasons["answer_not_single_token"] += 1
            keep.append(False)
        else:
            keep.append(True)
    kept = facts[keep].reset_index(drop=True)
    if len(kept) < len(facts):
        log.info("dropped %d of %d facts: %s", len(facts) - len(kept), len(facts), reasons)
    return kept, reasons
