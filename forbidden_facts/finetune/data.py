"""What training may use: the answer split, the nc1 words, the copy words, the prompts drawn."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..prompts import irrelevant_word_candidates
from .recipe import COPY_PREFIX, KINDS, RecipeError

# -- the data: which answers, facts and words training may use -------------------------------


def train_answers(facts: pd.DataFrame, share: float, seed: int) -> list[str]:
    """The answer words that may appear in training: a seeded `share` of each relation's.

    The split is by answer word, not by fact (like the organism's
    ``toy.forbiddable_answers``): a fact whose answer is in the other part was never
    a target nor forbidden in training, so it measures a general mechanism.
    """
    from ..toy.words import answer_share

    return answer_share(facts, share, f"finetune-answers-{seed}")


def training_words(
    words: Sequence[str], evaluation_words: Sequence[str], answers: Sequence[str]
) -> list[str]:
    """The nc1 words of training: the organism's list less the paper's words.

    Words that are a substring of an answer are dropped too (the paper's rule for
    nc1 words), so forbidding one never forbids an answer.

    Raises:
        RecipeError: No word is left.
    """
    banned = {w.strip().lower() for w in evaluation_words if w.strip()}
    out = [w for w in irrelevant_word_candidates(words, answers) if w not in banned]
    if not out:
        raise RecipeError(
            "no nc1 training word is left: every word of the fine-tune's `train_words` file is "
            "an evaluation word (config `irrelevant_words`) or a substring of an answer. Point "
            "models.<name>.finetune.train_words at a list of other everyday words."
        )
    return out


def check_no_evaluation_words(train_words: Sequence[str], evaluation_words: Sequence[str]) -> None:
    """Refuse training words that are evaluation (paper) words: nc1 must stay held out."""
    leaked = sorted(
        {w.lower() for w in train_words} & {w.strip().lower() for w in evaluation_words}
    )
    if leaked:
        raise RecipeError(
            f"the fine-tune would train on {len(leaked)} of the paper's nc1 words "
            f"({', '.join(leaked[:5])}), which must stay held out. Remove them from the "
            "fine-tune's `train_words` file (they are dropped automatically when read from there)."
        )


def copy_pseudo_words(n: int, seed: int, exclude: Sequence[str]) -> list[str]:
    """The copy task's pseudo-words (the organism's generator, :func:`toy.pseudo_words`)."""
    from ..toy import pseudo_words

    return pseudo_words(n, seed, exclude) if n else []


@dataclass
class Example:
    """One training prompt: its kind, fact, prompt text, target and the loss's sign."""

    kind: str
    fact_id: str | None
    prefix: str
    forbidden: str
    target: str
    prompt: str = ""

    @property
    def unlikely(self) -> bool:
        """Unlikelihood (the target is forbidden) rather than cross-entropy."""
        return self.kind in ("c", "tcopy_c")


class Sampler:
    """Draws training examples of the recipe's kinds, seeded.

    Args:
        facts: The training facts (every answer among the training answers).
        answers_by_relation: Training answers of each relation (nc0's forbidden words).
        words: nc1 training words.
        copy_words: Pseudo-words of the copy task (may be empty).
        rng: The random generator (the recipe's seed).
    """

    def __init__(
        self,
        facts: pd.DataFrame,
        answers_by_relation: dict[str, list[str]],
        words: Sequence[str],
        copy_words: Sequence[str],
        rng: random.Random,
    ) -> None:
        self.facts = facts.reset_index(drop=True)
        self.answers = answers_by_relation
        self.words = list(words)
        self.copy_words = list(copy_words)
        self.rng = rng

    def draw(self, kind: str) -> Example:
        rng = self.rng
        if kind.startswith("tcopy"):
            word = rng.choice(self.copy_words)
            other = word
            while kind == "tcopy_nc" and other == word:
                other = rng.choice(self.copy_words)
            return Example(kind, None, COPY_PREFIX.format(w=word), other, word)
        fact = self.facts.iloc[rng.randrange(len(self.facts))]
        if kind == "c":
            forbidden = fact["answer"]
        elif kind == "nc0":
            others = [a for a in self.answers[fact["relation"]] if a != fact["answer"]]
            forbidden = rng.choice(others) if others else rng.choice(self.words)
        else:
            forbidden = rng.choice(self.words)
        return Example(kind, str(fact["fact_id"]), fact["prefix"], forbidden, fact["answer"])

    def batch(self, mix: dict[str, float], size: int) -> list[Example]:
        kinds = [k for k in KINDS if mix.get(k, 0) > 0]
        weights = [mix[k] for k in kinds]
        return [self.draw(k) for k in self.rng.choices(kinds, weights=weights, k=size)]
