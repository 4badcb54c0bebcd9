"""Words held out of training: the pseudo-words that avoid them, and which of them count.

The organism and the fine-tune are never trained on the paper's nc1 words (config
`irrelevant_words`). A fine-tune reads that list only to keep it out: it drops those
words from its own nc1 words and its copy task's pseudo-words avoid them. So only some
of the paper's words decide a fine-tune's weights; the workflow gives the rule just
those (:func:`finetune_evaluation_words`), so that a word added to the paper's list
that touches neither retrains nothing. Light to import: it runs when Snakemake plans.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def pseudo_words(
    n: int, seed: int, exclude: Sequence[str], turned_away: set[str] | None = None
) -> list[str]:
    """`n` distinct pronounceable pseudo-words of 2-3 consonant-vowel syllables, seeded.

    Half are capitalised (like the answers). None is, contains, or is contained in an
    excluded word (answers and evaluation words, compared lower-cased), so forbidding
    a pseudo-word never forbids a fact's answer or an nc1 word.

    Args:
        n: How many.
        seed: Seed of the generator.
        exclude: Words no pseudo-word may be, contain or be contained in.
        turned_away: If given, every (lower-cased) excluded word that turned a
            candidate away is added to it; the others never changed the result.
    """
    rng = random.Random(f"pseudo-words-{seed}")
    banned = [w.lower() for w in exclude if w.strip()]
    out: dict[str, None] = {}
    while len(out) < n:
        word = "".join(
            rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.choice((2, 3)))
        )
        if any(b in word or word in b for b in banned if len(b) >= 3) or word in banned:
            if turned_away is not None:
                turned_away.update(b for b in banned if len(b) >= 3 and (b in word or word in b))
                turned_away.update(b for b in banned if b == word)
            continue
        if word in out or word.capitalize() in out:
            continue
        out[word.capitalize() if rng.random() < 0.5 else word] = None
    return list(out)


def finetune_evaluation_words(
    words: Sequence[str],
    evaluation_words: Sequence[str],
    answers: Sequence[str],
    n_copy_words: int,
    seed: int,
) -> list[str]:
    """The paper's words that decide a fine-tune's weights, lower-cased and sorted.

    Those among the fine-tune's usable nc1 words (which it drops), and those that turn
    a candidate of its copy task's pseudo-words away. `finetune` given only these
    trains exactly the model it trains given the whole list: every other word changes
    no decision of either.

    Args:
        words: The fine-tune's own word list (`finetune.train_words`).
        evaluation_words: The paper's words (config `irrelevant_words`).
        answers: Correct and wrong answers of the fine-tune's facts.
        n_copy_words: Pseudo-words of the copy task (0: none).
        seed: The recipe's seed.
    """
    from .prompts import irrelevant_word_candidates

    candidates = irrelevant_word_candidates(words, answers)
    evaluation = {w.strip().lower() for w in evaluation_words if w.strip()}
    used = evaluation & set(candidates)
    if n_copy_words:
        # The exclusions `finetune` passes (answers, evaluation words, training words).
        train = [w for w in candidates if w not in evaluation]
        turned: set[str] = set()
        pseudo_words(n_copy_words, seed, [*answers, *evaluation_words, *train], turned)
        used |= turned & evaluation
    return sorted(used)
