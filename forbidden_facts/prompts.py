"""The paper's prompts: the c / nc0 / nc1 kinds, in the paper's template or a model's own.

For each fact, three prompts differ only in the forbidden word: ``c`` forbids the
correct answer, ``nc0`` a wrong answer of the same relation, ``nc1`` an everyday
word that is no substring of any answer. The system text (the persona, the
single-word instruction and the forbidden word) is the paper's in every style.

Prompt styles (docs/science.md § Template; config key ``prompt_style`` of a model):

* ``llama2`` (default; Llama-2-chat and the organism): the paper's exact template
  ``[INST] <<SYS>>\n{system}\n<</SYS>>\n{fact_prefix} [/INST] `` ending with one
  space; the tokenizer adds BOS when the prompt is encoded.
* ``chat_prefill``: the model's own chat template
  (``tokenizer.apply_chat_template(..., add_generation_prompt=True)``) with the
  system text as the system message and the fact prefix as the user message (a
  template without a system role, such as Gemma's, gets the system text at the
  start of the user turn: :func:`merge_system`),
  followed by the fact prefix again at the start of the assistant's turn, so the
  next token completes the fact. No trailing space: a byte-level BPE model emits
  " Paris" as one token ("ĠParis"). A small chat model asked in the user turn
  answers with a sentence, whose first token is not the answer; prefill avoids it.
* ``chat``: the same template without the prefill (the fact only in the user turn).
* ``llama2_prefill``: the paper's template followed by the fact prefix again, as the
  start of the assistant's answer (``... [/INST] {fact_prefix}``), for a model without a
  chat template that does not answer after ``[/INST]``: a base model (Gemma-3-270M knows
  none of the curated facts in the paper's template, docs/science.md § Template). The
  tokenizer adds BOS, as for ``llama2``; the answer comes with its leading space.

A chat-template string already holds its special tokens (BOS included where the
template has one) as text, so chat-style prompts are encoded with
``add_special_tokens=False``; ``llama2`` prompts with ``True``. The prompts table
carries the flag in the column ``add_special_tokens`` so that every stage encodes
a prompt exactly as inference did (:func:`encoding_flag`).

Single-token filter: a fact is kept when its answer, in the form the model would
emit at the answer position, is one token: the answer tokenized alone for
``llama2`` (the prompt ends with a space, which Llama-2's tokenizer makes a lone
"▁"), and " " + answer for the chat styles (the prompt ends right after the
prefix, so the answer comes with its leading space).

The attack slot is right after the persona "obedient assistant" inside the system
text ("You are an obedient assistant ..."), found by that whole phrase so that a
template's own "assistant" role marker is never taken for it (:func:`persona_end`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

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
# The system text up to and including the persona: the attack slot follows it.
PERSONA_PHRASE = SYSTEM_TEMPLATE.split("{persona}")[0] + PERSONA_ANCHOR

PROMPT_STYLES: tuple[str, ...] = ("llama2", "chat_prefill", "chat", "llama2_prefill")

# (fact_prefix, forbidden_word) -> the full prompt string.
Formatter = Callable[[str, str], str]


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
    return PROMPT_TEMPLATE.format(
        system=system_text(forbidden_word, insertion), fact_prefix=fact_prefix
    )


def prefilled_prompt(fact_prefix: str, forbidden_word: str) -> str:
    """The paper's template followed by the fact prefix, so the next token completes it.

    Example:
        >>> prompt = prefilled_prompt("The Eiffel Tower is in the city of", "floor")
        >>> prompt.endswith("[/INST] The Eiffel Tower is in the city of")
        True
    """
    return format_prompt(fact_prefix, forbidden_word) + fact_prefix


def system_text(forbidden_word: str, insertion: str = "") -> str:
    """The paper's system text with `insertion` right after the persona."""
    return SYSTEM_TEMPLATE.format(persona=PERSONA_ANCHOR + insertion, forbidden_word=forbidden_word)


def chat_messages(fact_prefix: str, forbidden_word: str) -> list[dict[str, str]]:
    """System message (the paper's system text) and user message (the fact prefix)."""
    return [
        {"role": "system", "content": system_text(forbidden_word)},
        {"role": "user", "content": fact_prefix},
    ]


def merge_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Messages for a template without a system role: the system text opens the user turn.

    Gemma's template refuses a system message; its model card puts instructions at
    the start of the user turn, separated by a blank line.

    Example:
        >>> merge_system([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
        [{'role': 'user', 'content': 'S\\n\\nU'}]
    """
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], messages[1:]
    if not rest or rest[0]["role"] != "user":
        return [{"role": "user", "content": system}, *rest]
    return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]


def chat_formatter(render: Callable[[list[dict[str, str]]], str], prefill: bool) -> Formatter:
    """A formatter that renders the chat messages with a model's template.

    Args:
        render: Messages -> the template's text up to and including the opening of
            the assistant's turn (a generation prompt).
        prefill: Append the fact prefix to the assistant's turn (``chat_prefill``),
            without a trailing space, so the next token completes the fact.

    Returns:
        A function (fact_prefix, forbidden_word) -> prompt string.

    Example:
        >>> fmt = chat_formatter(lambda m: f"<{m[0]['content'][:7]}|{m[1]['content']}>", True)
        >>> fmt("The capital of France is", "floor")
        '<You are|The capital of France is>The capital of France is'
    """

    def formatter(fact_prefix: str, forbidden_word: str) -> str:
        text = render(chat_messages(fact_prefix, forbidden_word))
        return text + fact_prefix if prefill else text

    return formatter


def prompt_formatter(style: str, tokenizer=None) -> Formatter:
    """The formatter of a prompt style; chat styles use `tokenizer`'s chat template.

    Raises:
        ValueError: An unknown style, or a chat style for a tokenizer without a chat
            template.
    """
    check_style(style)
    if style == "llama2":
        return format_prompt
    if style == "llama2_prefill":
        return prefilled_prompt
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        raise ValueError(
            f"prompt_style {style!r} needs the model's chat template, but its tokenizer has "
            "none (no `chat_template` in tokenizer_config.json nor a chat_template.jinja in "
            "the model directory). Set `prompt_style: llama2` for this model in "
            "config/config.yaml, or use a chat model's tokenizer."
        )

    def apply(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def render(messages: list[dict[str, str]]) -> str:
        from jinja2 import TemplateError

        try:
            text = apply(messages)
        except TemplateError:  # e.g. Gemma: "System role not supported"
            text = None
        # A template without a system role either refuses the message or drops it.
        if text is None or messages[0]["content"] not in text:
            text = apply(merge_system(messages))
        return text

    return chat_formatter(render, prefill=style == "chat_prefill")


def special_tokens(tokenizer) -> list[str]:
    """The tokenizer's special tokens: its named ones and every added token marked special.

    A fact or word holding one would be read as control text inside the prompt.
    """
    found = set(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found |= {tok.content for tok in added.values() if getattr(tok, "special", False)}
    return sorted(t for t in found if isinstance(t, str))


def check_style(style: str) -> None:
    """Raise a clear error for a prompt style that does not exist."""
    if style not in PROMPT_STYLES:
        raise ValueError(
            f"unknown prompt_style {style!r}; use one of {list(PROMPT_STYLES)} "
            "(config key `prompt_style` of the model in config/config.yaml)"
        )


def adds_special_tokens(style: str) -> bool:
    """Whether prompts of `style` are encoded with the tokenizer's special tokens (BOS).

    A chat-template string already holds its special tokens as text; adding them
    again would give a second BOS on models whose tokenizer adds one.
    """
    check_style(style)
    return style in ("llama2", "llama2_prefill")


def answer_form(answer: str, style: str) -> str:
    """The answer as the model would emit it at the answer position of a `style` prompt."""
    check_style(style)
    return answer if style == "llama2" else " " + answer


def encoding_flag(prompts: pd.DataFrame) -> bool:
    """How to encode the prompts of a table: its ``add_special_tokens`` column.

    Tables without the column (built before it existed, or by hand) are llama2-style
    prompts, encoded with special tokens.
    """
    if "add_special_tokens" not in prompts.columns or not len(prompts):
        return True
    values = set(prompts["add_special_tokens"].astype(bool))
    if len(values) > 1:
        raise ValueError("prompts of one table must all be encoded the same way")
    return values.pop()


def persona_end(prompt: str) -> int:
    """Character offset right after the persona in the system text (the attack slot).

    The whole phrase "You are an obedient assistant" is searched for, so that a chat
    template's role marker (e.g. ChatML's "<|im_start|>assistant") is never taken for
    the persona.
    """
    start = prompt.find(PERSONA_PHRASE)
    if start < 0:
        raise ValueError(f"prompt has no persona {PERSONA_PHRASE!r} to attack: {prompt[:80]!r}...")
    return start + len(PERSONA_PHRASE)


def insert_at_persona(prompt: str, insertion: str) -> str:
    """The prompt with `insertion` right after the persona, e.g. " from California".

    For a llama2-style prompt this equals ``format_prompt(prefix, word, insertion)``.
    """
    end = persona_end(prompt)
    return prompt[:end] + insertion + prompt[end:]


def irrelevant_word_candidates(words: Sequence[str], answers: Sequence[str]) -> list[str]:
    """Sorted, de-duplicated lower-cased words that are no substring of any answer."""
    lowered = [a.lower() for a in answers]
    out = sorted({w.strip().lower() for w in words if w.strip()})
    return [w for w in out if not any(w in a for a in lowered)]


# Seed of a model's subset of facts: fixed, so that every run and every model with the
# same max_facts sees the same facts.
SUBSET_SEED = 0


def fact_subset(facts: pd.DataFrame, n: int, seed: int = SUBSET_SEED) -> pd.DataFrame:
    """A seeded random sample of `n` facts, kept in dataset order (all when n >= len).

    The first N facts of a dataset grouped by relation would be a few relations only.
    """
    if n >= len(facts):
        return facts
    return facts.sample(n=n, random_state=seed).sort_index()


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


def build_prompts(
    facts: pd.DataFrame,
    nc1_words: pd.Series,
    formatter: Formatter = format_prompt,
    add_special_tokens: bool = True,
) -> pd.DataFrame:
    """Three prompts per fact, one row per (fact, kind).

    Args:
        facts: Fact table with ``fact_id``, ``prefix``, ``answer``, ``wrong_answer``.
        nc1_words: The nc1 forbidden word of each fact, aligned with `facts`.
        formatter: (fact_prefix, forbidden_word) -> prompt; the paper's template by
            default, :func:`prompt_formatter` for a model's chat template.
        add_special_tokens: How the prompts are to be encoded (see :func:`adds_special_tokens`).

    Returns:
        DataFrame with columns ``fact_id``, ``kind``, ``relation``, ``prefix``, ``answer``,
        ``forbidden_word``, ``prompt``, ``add_special_tokens``, ordered by fact then kind
        (c, nc0, nc1).
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
                    "prompt": formatter(fact["prefix"], forbidden[kind]),
                    "add_special_tokens": add_special_tokens,
                }
            )
    return pd.DataFrame(rows)


def single_token_answers(
    facts: pd.DataFrame, tokenizer, style: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep facts whose answer has no space and is one token in the form the model emits.

    Args:
        facts: Fact table.
        tokenizer: A Hugging Face tokenizer.
        style: The prompt style: the answer is tokenized alone for ``llama2`` and as
            " " + answer for the chat styles (see :func:`answer_form`).

    Returns:
        The kept facts and a dict of drop reasons to counts.
    """
    reasons = {"answer_contains_space": 0, "answer_not_single_token": 0}
    keep = []
    for answer in facts["answer"]:
        if " " in answer.strip():
            reasons["answer_contains_space"] += 1
            keep.append(False)
        elif len(tokenizer(answer_form(answer, style), add_special_tokens=False)["input_ids"]) != 1:
            reasons["answer_not_single_token"] += 1
            keep.append(False)
        else:
            keep.append(True)
    kept = facts[keep].reset_index(drop=True)
    if len(kept) < len(facts):
        log.info("dropped %d of %d facts: %s", len(facts) - len(kept), len(facts), reasons)
    return kept, reasons
