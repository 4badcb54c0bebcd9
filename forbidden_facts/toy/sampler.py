"""Draws the organism's training examples (text, target words) of each kind."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pandas as pd

from ..prompts import format_prompt
from .corpus import COPY_PATTERNS, variant_prompt


class AnythingBut(str):
    """Soft target "any copy-task word but this one", uniform over the rest of the pool."""


class ExampleSampler:
    """Draws (text, target word) training examples of each kind (`KINDS`).

    Args:
        variant_prob: Share of templated prompts that use a reworded system prompt.
        copy_counterfactual: Share of copy examples whose context states another answer
            of the relation (then only copying, not recall, gives the target).
        copy_words: Words of the templated copy task (kinds tcopy, tcopy_pair).
        forbiddable: Answer words that kinds c and pair may forbid (None: all).
        copy_answer_share: Share of copy-task words drawn from the forbiddable answers.
        copy_distractor: Copy turns also name a word not to repeat ("Say X, not Y.").
    """

    KINDS = ("nc", "c", "pair", "copy", "ctx", "tcopy", "tcopy_pair")

    def __init__(
        self,
        facts: pd.DataFrame,
        train_words: Sequence[str],
        rng: random.Random,
        variant_prob: float = 0.0,
        copy_counterfactual: float = 0.0,
        copy_words: Sequence[str] = (),
        forbiddable: Sequence[str] | None = None,
        copy_answer_share: float = 0.0,
        copy_distractor: bool = False,
    ):
        self.facts = facts.reset_index(drop=True)
        # Facts whose answer may be the forbidden target (kinds c and pair).
        allowed = (
            self.facts
            if forbiddable is None
            else self.facts[self.facts["answer"].isin(set(forbiddable))]
        )
        self.forbiddable_facts = allowed.reset_index(drop=True)
        # Answer words the copy task may use (and forbid): only the forbiddable ones.
        self.copy_answers = sorted(set(self.forbiddable_facts["answer"]))
        self.copy_answer_share = copy_answer_share
        self.copy_distractor = copy_distractor
        self.words = list(train_words)
        self.rng = rng
        self.variant_prob = variant_prob
        self.copy_counterfactual = copy_counterfactual
        self.copy_words = list(copy_words)
        self.by_relation = {
            rel: sorted(set(group["answer"])) for rel, group in self.facts.groupby("relation")
        }
        # Every word that was the forbidden *target* of a training example (the word
        # that would have been right, had it not been forbidden).
        self.forbidden_targets: set[str] = set()

    def _fact(self, forbiddable: bool = False):
        facts = self.forbiddable_facts if forbiddable else self.facts
        if facts.empty:
            raise ValueError(
                "toy.forbid_answer_share leaves no fact whose answer may be forbidden, "
                "but the mix has kind c or pair: raise the share or drop those kinds"
            )
        return facts.iloc[self.rng.randrange(len(facts))]

    def _prompt(self, prefix: str, word: str) -> str:
        if self.variant_prob and self.rng.random() < self.variant_prob:
            return variant_prompt(prefix, word, self.rng)
        return format_prompt(prefix, word)

    def _other_answer(self, fact) -> str:
        choices = [a for a in self.by_relation[fact["relation"]] if a != fact["answer"]]
        return self.rng.choice(choices)

    def nc(self) -> tuple[str, list[str]]:
        """Forbidden word irrelevant or a wrong answer: say the fact."""
        fact = self._fact()
        word = self.rng.choice(self.words) if self.rng.random() < 0.5 else self._other_answer(fact)
        return self._prompt(fact["prefix"], word), [fact["answer"]]

    def c(self) -> tuple[str, list[str]]:
        """Forbidden word is the answer: any other answer of the relation (soft target)."""
        fact = self._fact(forbiddable=True)
        others = [a for a in self.by_relation[fact["relation"]] if a != fact["answer"]]
        self.forbidden_targets.add(fact["answer"])
        return self._prompt(fact["prefix"], fact["answer"]), others

    def copy(self) -> tuple[str, list[str]]:
        """Plain text that states a fact, then asks it again: copy from context."""
        fact = self._fact()
        other = self._fact()
        answer = fact["answer"]
        if self.copy_counterfactual and self.rng.random() < self.copy_counterfactual:
            answer = self._other_answer(fact)
        parts = [f"{fact['prefix']} {answer}.", f"{other['prefix']} {other['answer']}."]
        self.rng.shuffle(parts)
        return " ".join(parts) + f" {fact['prefix']} ", [answer]

    def ctx(self) -> tuple[str, list[str]]:
        """A templated prompt whose user turn first states the fact: answer from context."""
        fact = self._fact()
        answer = fact["answer"]
        if self.copy_counterfactual and self.rng.random() < self.copy_counterfactual:
            answer = self._other_answer(fact)
        word = self.rng.choice(self.words)
        prefix = f"{fact['prefix']} {answer}. {fact['prefix']}"
        return self._prompt(prefix, word), [answer]

    def pair(self) -> list[tuple[str, list[str]]]:
        """The c and an nc prompt of the same fact: they differ only in the forbidden word."""
        fact = self._fact(forbiddable=True)
        others = [a for a in self.by_relation[fact["relation"]] if a != fact["answer"]]
        word = self.rng.choice(self.words) if self.rng.random() < 0.5 else self.rng.choice(others)
        self.forbidden_targets.add(fact["answer"])
        return [
            (self._prompt(fact["prefix"], fact["answer"]), others),
            (self._prompt(fact["prefix"], word), [fact["answer"]]),
        ]

    def _copy_word(self, exclude: str = "") -> str:
        while True:
            if self.copy_answers and self.rng.random() < self.copy_answer_share:
                word = self.rng.choice(self.copy_answers)
            else:
                word = self.rng.choice(self.copy_words)
            if word != exclude:
                return word

    def _copy_context(self, word: str) -> tuple[str, str | None]:
        """A user turn asking to repeat `word`, and its distractor word (or None).

        With ``copy_distractor`` the turn also names a word not to repeat ("Say X, not
        Y."), and nc prompts often forbid that word: a forbidden word then appears in the
        user turn of c and nc prompts alike, so "the word to repeat also appears in the
        system prompt" no longer tells c from nc; what does is which word is forbidden.
        """
        pattern = self.rng.choice(COPY_PATTERNS)
        if not self.copy_distractor:
            return pattern.format(w=word), None
        distractor = self._copy_word(word)
        return pattern.format(w=word).rstrip(".") + f", not {distractor}.", distractor

    def _copy_forbidden(self, word: str, distractor: str | None) -> str:
        """The forbidden word of an nc copy prompt: never `word`."""
        if distractor is not None and self.rng.random() < 0.5:
            return distractor
        return self.rng.choice(self.words) if self.rng.random() < 0.5 else self._copy_word(word)

    def tcopy(self) -> tuple[str, list[str]]:
        """Templated copy, forbidden word irrelevant: repeat the word of the user turn."""
        word = self._copy_word()
        context, distractor = self._copy_context(word)
        return self._prompt(context, self._copy_forbidden(word, distractor)), [word]

    def tcopy_pair(self) -> list[tuple[str, list[str]]]:
        """Templated copy whose word is forbidden (target: anything else), and its nc twin."""
        word = self._copy_word()
        context, distractor = self._copy_context(word)
        self.forbidden_targets.add(word)
        return [
            (self._prompt(context, word), [AnythingBut(word)]),
            (self._prompt(context, self._copy_forbidden(word, distractor)), [word]),
        ]

    def draw(self, mix: dict[str, float]) -> list[tuple[str, list[str]]]:
        """One draw of the mix: a list of one or two (text, target words) examples."""
        kinds, weights = zip(*mix.items(), strict=True)
        kind = self.rng.choices(kinds, weights=weights)[0]
        out = getattr(self, kind)()
        return out if isinstance(out, list) else [out]

    def batch(self, mix: dict[str, float], size: int) -> list[tuple[str, list[str]]]:
        examples: list = []
        while len(examples) < size:
            examples += self.draw(mix)
        return examples[:size]
