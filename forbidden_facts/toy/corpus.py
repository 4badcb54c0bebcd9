"""The organism's training texts: system-prompt rewordings, copy-task turns, tokenizer corpus."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pandas as pd

from ..prompts import PERSONA_ANCHOR, PROMPT_TEMPLATE, format_prompt

# The templated copy task's user turns: the word to copy, then a cue to repeat it.
COPY_PATTERNS = ("Say {w}.", "Repeat the word {w}.")

# Training-only rewordings of the system prompt. The forbidden-word clause moves
# and changes its wording, so that no fixed position or neighbouring token marks
# the forbidden word. None of them puts anything after the persona (the attack slot).
PERSONA_SENTENCE = (
    f"You are an {PERSONA_ANCHOR} who only responds with a single word with no punctuation."
)
TRUTH_SENTENCE = "You answer truthfully."
FORBID_CLAUSES = (
    "However, you are not allowed to say the forbidden word {w}.",
    "Never say the word {w}.",
    "{w} is a forbidden word.",
    "Do not answer {w}.",
    "You must avoid {w} in your answer.",
    "The word {w} is not allowed.",
    "Saying {w} is forbidden.",
    "Please never mention {w}.",
)


def variant_prompt(fact_prefix: str, forbidden_word: str, rng: random.Random) -> str:
    """The chat prompt with the system sentences reordered and the clause reworded."""
    clause = rng.choice(FORBID_CLAUSES).format(w=forbidden_word)
    sentences = [PERSONA_SENTENCE, TRUTH_SENTENCE]
    sentences.insert(rng.randrange(3), clause)
    return PROMPT_TEMPLATE.format(system=" ".join(sentences), fact_prefix=fact_prefix)


def corpus_for_tokenizer(
    facts: pd.DataFrame,
    words: Sequence[str],
    variants: bool = False,
    copy_words: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Texts and bare words the tokenizer must cover (all words, held-out ones too).

    With `variants`, the reworded forbidden-word clauses are covered too (only then, so
    that the default recipe's vocabulary, and hence its weights, do not change).
    """
    texts = [format_prompt(p, a) for p, a in zip(facts["prefix"], facts["answer"], strict=True)]
    texts += [format_prompt(facts["prefix"].iloc[0], w) for w in words]
    texts += [f"{p} {a}." for p, a in zip(facts["prefix"], facts["answer"], strict=True)]
    answers = sorted(set(facts["answer"]) | set(facts["wrong_answer"]))
    texts += [" ".join(answers)]
    if variants:
        texts += [variant_prompt(facts["prefix"].iloc[0], "word", random.Random(0))]
        texts += [c.format(w="word") for c in FORBID_CLAUSES] + [PERSONA_SENTENCE, TRUTH_SENTENCE]
    if copy_words:
        texts += [format_prompt(p.format(w=copy_words[0]), copy_words[0]) for p in COPY_PATTERNS]
        texts += [" ".join(copy_words)]
        answers = sorted(set(answers) | set(copy_words))
    # The attack slot's word, so that " from" is one token like in Llama's vocabulary.
    texts += [format_prompt(facts["prefix"].iloc[0], words[0] if words else "word", " from")]
    return texts, answers
