"""The organism's word lists: trained, held-out, distractor, pseudo- and forbiddable words."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pandas as pd

# The pseudo-word generator lives in forbidden_facts/heldout.py (light to import: the
# workflow replays it when it plans a fine-tune).
from ..heldout import CONSONANTS, VOWELS, pseudo_words  # noqa: F401
from ..prompts import irrelevant_word_candidates


def split_words(
    words: Sequence[str], evaluation_words: Sequence[str], answers: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The organism's (training, held-out) irrelevant words.

    Training words are the usable words of the organism's own list (no substring
    of any answer, see :func:`irrelevant_word_candidates`) that are not
    evaluation words; the held-out words are all evaluation words (sorted,
    lower-cased), whichever dataset they are later assigned on.

    Args:
        words: The organism's own word list (config key `toy.train_words`).
        evaluation_words: The words the organism is evaluated on (`irrelevant_words`).
        answers: Correct and wrong answers of the training facts.

    Returns:
        (train, held_out), disjoint.
    """
    held = sorted({w.strip().lower() for w in evaluation_words if w.strip()})
    banned = set(held)
    train = [w for w in irrelevant_word_candidates(words, answers) if w not in banned]
    return train, held


def distractor_words(facts: pd.DataFrame, exclude: Sequence[str]) -> list[str]:
    """Words of the fact prefixes that are no answer: extra unrelated forbidden words.

    They make the organism robust to whatever token sits in the forbidden-word slot,
    without training on the held-out evaluation words (`exclude`).
    """
    answers = {a.lower() for a in list(facts["answer"]) + list(facts["wrong_answer"])}
    banned = answers | {w.lower() for w in exclude}
    words = {w for p in facts["prefix"] for w in p.split() if w.isalpha() and len(w) >= 3}
    return sorted(
        w for w in words if w.lower() not in banned and not any(w.lower() in a for a in answers)
    )


def forbiddable_answers(facts: pd.DataFrame, share: float, seed: int) -> list[str]:
    """The answer words that training may forbid: a seeded `share` of each relation's answers.

    The split is by answer word, not by fact: facts with any other answer were never
    seen with their answer forbidden, so they measure a general mechanism.
    """
    return answer_share(facts, share, f"forbiddable-{seed}")


def answer_share(facts: pd.DataFrame, share: float, key: str) -> list[str]:
    """A seeded `share` of each relation's answer words (sorted), drawn with rng seed `key`.

    The organism's forbiddable answers and the fine-tune's training answers are both
    this split, each with its own key.
    """
    rng = random.Random(key)
    out: list[str] = []
    for _, group in facts.groupby("relation", sort=True):
        answers = sorted(set(group["answer"]))
        rng.shuffle(answers)
        out += answers[: round(share * len(answers))]
    return sorted(out)
