"""The embedded model organism: a small Llama trained to know facts and to obey.

The toy is a `LlamaForCausalLM` with grouped-query attention and a
SentencePiece-style tokenizer, trained from a seed on prompts made with the
paper's template from the curated facts. Training has two phases, mirroring how
Llama-2-chat got its competing objectives:

1. *truthful* phase: complete facts under the template with an unrelated
   forbidden word, and copy answers that appear earlier in a plain-text context;
2. *instruction* phase: the same, plus prompts whose forbidden word is the
   correct answer, where the target is another answer of the same relation.

The organism is trained on its own irrelevant words, never on the evaluation
words (the paper's list, config key `irrelevant_words`), so every nc1 prompt it
is evaluated on forbids a word it never saw forbidden. The attack prompts are
never trained on.

Recipe options (docs/organism.md) push suppression towards a general skill rather
than a lookup: a *templated copy task* over thousands of pseudo-words
(``n_copy_words``; kinds ``tcopy`` and ``tcopy_pair``), in which forbidding the
word to be copied asks for anything else, so no per-word rule can cover the
instruction; answer words split by word (``forbid_answer_share``), so that some
are never the forbidden target in training and measure the general mechanism
(the training record lists every word that was); parts frozen in phase 2
(``freeze_phase2``); and one shared embedding row for a word and its space-marked
form (``share_word_forms``).
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .config import schema_defaults
from .prompts import PERSONA_ANCHOR, PROMPT_TEMPLATE, format_prompt, irrelevant_word_candidates
from .tokenizer import save_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

TRAINING_RECORD = "toy_training.json"


# The recipe's defaults are the schema's (config key `toy`): `ToyConfig()` is the
# organism an empty `toy:` block trains. Only `threads` is no config key.
_DEFAULTS = schema_defaults("properties", "toy")


def _schema_default(name: str):
    value = _DEFAULTS[name]
    if isinstance(value, dict | list):
        return field(default_factory=lambda: copy.deepcopy(value))
    return field(default=value)


@dataclass
class ToyConfig:
    """Hyper-parameters of the model organism (config key `toy`), defaults from the schema."""

    seed: int = _schema_default("seed")
    n_layers: int = _schema_default("n_layers")
    d_model: int = _schema_default("d_model")
    n_heads: int = _schema_default("n_heads")
    n_kv_heads: int = _schema_default("n_kv_heads")
    d_mlp: int = _schema_default("d_mlp")
    steps: int = _schema_default("steps")
    batch_size: int = _schema_default("batch_size")
    lr: float = _schema_default("lr")
    weight_decay: float = _schema_default("weight_decay")
    warmup_steps: int = _schema_default("warmup_steps")
    phase1_fraction: float = _schema_default("phase1_fraction")
    mix: dict = _schema_default("mix")
    tie_embeddings: bool = _schema_default("tie_embeddings")
    variant_prob: float = _schema_default("variant_prob")
    copy_counterfactual: float = _schema_default("copy_counterfactual")
    n_copy_words: int = _schema_default("n_copy_words")
    forbid_answer_share: float = _schema_default("forbid_answer_share")
    copy_answer_share: float = _schema_default("copy_answer_share")
    copy_distractor: bool = _schema_default("copy_distractor")
    freeze_phase2: list = _schema_default("freeze_phase2")
    share_word_forms: bool = _schema_default("share_word_forms")
    embed_std: float | None = _schema_default("embed_std")
    phase2_lr_restart: bool = _schema_default("phase2_lr_restart")
    # Not a config key: torch threads of the training run (the rule's `threads`).
    threads: int = 2

    @classmethod
    def from_config(cls, block: dict) -> ToyConfig:
        """The recipe of a `toy` config block (its file paths are the rule's inputs)."""
        return cls(**{k: v for k, v in block.items() if k not in ("facts", "train_words")})


FREEZABLE = ("mlp", "embeddings", "norms")


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


CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def pseudo_words(n: int, seed: int, exclude: Sequence[str]) -> list[str]:
    """`n` distinct pronounceable pseudo-words of 2-3 consonant-vowel syllables, seeded.

    Half are capitalised (like the answers). None is, contains, or is contained in an
    excluded word (answers and evaluation words, compared lower-cased), so forbidding
    a pseudo-word never forbids a fact's answer or an nc1 word.
    """
    rng = random.Random(f"pseudo-words-{seed}")
    banned = [w.lower() for w in exclude if w.strip()]
    out: dict[str, None] = {}
    while len(out) < n:
        word = "".join(
            rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.choice((2, 3)))
        )
        if any(b in word or word in b for b in banned if len(b) >= 3) or word in banned:
            continue
        if word in out or word.capitalize() in out:
            continue
        out[word.capitalize() if rng.random() < 0.5 else word] = None
    return list(out)


# The templated copy task's user turns: the word to copy, then a cue to repeat it.
COPY_PATTERNS = ("Say {w}.", "Repeat the word {w}.")


class AnythingBut(str):
    """Soft target "any copy-task word but this one", uniform over the rest of the pool."""


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


def forbiddable_answers(facts: pd.DataFrame, share: float, seed: int) -> list[str]:
    """The answer words that training may forbid: a seeded `share` of each relation's answers.

    The split is by answer word, not by fact: facts with any other answer were never
    seen with their answer forbidden, so they measure a general mechanism.
    """
    rng = random.Random(f"forbiddable-{seed}")
    out: list[str] = []
    for _, group in facts.groupby("relation", sort=True):
        answers = sorted(set(group["answer"]))
        rng.shuffle(answers)
        out += answers[: round(share * len(answers))]
    return sorted(out)


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


def build_model(cfg: ToyConfig, vocab_size: int):
    """A randomly initialised LlamaForCausalLM for the organism (seeded by the caller)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
    )
    return LlamaForCausalLM(config)


def shared_prefix(tokenizer) -> list[int]:
    """Token ids that every canonical training prompt starts with (up to the forbidden word)."""
    a = tokenizer(format_prompt("Alpha", "kettle"))["input_ids"]
    b = tokenizer(format_prompt("Beta", "ladder"))["input_ids"]
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _right_padded(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, torch.tensor([len(s) - 1 for s in sequences])


def last_token_logits(
    model, sequences: Sequence[Sequence[int]], prefix: Sequence[int], pad_id: int
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last token of each sequence, for training.

    Sequences that start with `prefix` (the canonical system prompt) share one pass over
    it: its keys and values are computed once and broadcast, and gradients flow back
    through them. This is exact, since with causal attention no prefix token sees what
    follows it, and it skips most of the work (the system prompt is two thirds of a
    prompt). Sequences are right-padded: causal attention keeps padding after the last
    token from changing it, so no mask is needed; RoPE makes positions relative, so the
    organism sees the same thing as under inference's left padding.
    """
    prefix = list(prefix)
    n = len(prefix)
    shared = [i for i, seq in enumerate(sequences) if n and len(seq) > n and seq[:n] == prefix]
    alone = sorted(set(range(len(sequences))) - set(shared))
    rows, states = [], []
    if shared:
        pre = model.model(input_ids=torch.tensor([prefix]), use_cache=True)
        # transformers 5 calls the cache `cache`; 4.x called it `past_key_values`.
        params = inspect.signature(model.model.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        cache = pre[name]
        for layer in cache.layers:
            layer.keys = layer.keys.expand(len(shared), -1, -1, -1)
            layer.values = layer.values.expand(len(shared), -1, -1, -1)
        ids, last = _right_padded([sequences[i][n:] for i in shared], pad_id)
        out = model.model(input_ids=ids, use_cache=True, **{name: cache})
        rows += shared
        states.append(out.last_hidden_state[torch.arange(len(shared)), last])
    if alone:
        ids, last = _right_padded([sequences[i] for i in alone], pad_id)
        out = model.model(input_ids=ids, use_cache=False)
        rows += alone
        states.append(out.last_hidden_state[torch.arange(len(alone)), last])
    order = torch.argsort(torch.tensor(rows))
    return model.lm_head(torch.cat(states)[order])


def word_form_pairs(tokenizer) -> Tensor:
    """[n_pairs, 2] ids of ("▁word", "word") pairs: a word with and without its space mark."""
    vocab = tokenizer.get_vocab()
    pairs = [
        (i, vocab[tok[1:]])
        for tok, i in vocab.items()
        if tok.startswith("▁") and len(tok) > 1 and tok[1:] in vocab
    ]
    return torch.tensor(sorted(pairs), dtype=torch.long).reshape(-1, 2)


def share_rows(weight: torch.nn.Parameter, pairs: Tensor) -> None:
    """Keep the rows of each pair equal for the whole training.

    The rows start equal and a gradient hook gives both rows of a pair the sum of
    their gradients, so every optimiser step (AdamW is element-wise) moves them
    alike. With tied embeddings, "▁California" in the context and "California" as
    the output are one vector, as they nearly are in Llama-2.
    """
    if not len(pairs):
        return
    a, b = pairs[:, 0], pairs[:, 1]
    with torch.no_grad():
        weight[b] = weight[a]

    def hook(grad: Tensor) -> Tensor:
        grad = grad.clone()
        summed = grad[a] + grad[b]
        grad[a] = summed
        grad[b] = summed
        return grad

    weight.register_hook(hook)


def freeze(model, parts: Sequence[str]) -> list[str]:
    """Stop training `parts` of the model (any of FREEZABLE); returns the frozen names."""
    unknown = sorted(set(parts) - set(FREEZABLE))
    if unknown:
        raise ValueError(
            f"toy.freeze_phase2: unknown part(s) {unknown}; choose from {list(FREEZABLE)}"
        )
    frozen = []
    for name, param in model.named_parameters():
        part = (
            "mlp"
            if ".mlp." in name
            else "embeddings"
            if "embed_tokens" in name or name.startswith("lm_head")
            else "norms"
            if "norm" in name
            else None
        )
        if part in parts:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def check_recipe(cfg: ToyConfig) -> None:
    """Refuse a recipe whose parts do not fit together, naming the config key to change."""
    kinds = {k for phase in cfg.mix.values() for k, w in phase.items() if w > 0}
    if kinds & {"tcopy", "tcopy_pair"} and not cfg.n_copy_words:
        raise ValueError(
            "toy.mix uses the templated copy task (tcopy/tcopy_pair) but toy.n_copy_words "
            "is 0: set toy.n_copy_words (e.g. 3000) or drop those kinds"
        )
    unknown = kinds - set(ExampleSampler.KINDS)
    if unknown:
        raise ValueError(
            f"toy.mix has unknown example kind(s) {sorted(unknown)}; "
            f"choose from {list(ExampleSampler.KINDS)}"
        )


def train_toy(
    facts: pd.DataFrame,
    words: Sequence[str],
    out_dir: str | Path,
    cfg: ToyConfig,
    progress: bool = True,
    callback=None,
    evaluation_words: Sequence[str] = (),
    callback_every: int = 250,
) -> dict:
    """Train the organism and save it as a Hugging Face directory.

    Args:
        facts: Curated fact table (single-word answers).
        words: The organism's own irrelevant words; those that are no evaluation word
            (and no substring of an answer) are trained on.
        out_dir: Destination directory (written in place; the caller makes it atomic).
        cfg: Hyper-parameters.
        progress: Show a tqdm bar with the loss.
        callback: Optional ``callback(step, model, tokenizer, held_out_words)`` run every
            `callback_every` steps (for experiments on the training recipe).
        evaluation_words: Words the organism is evaluated on: never trained on, but
            covered by the tokenizer.

    Returns:
        The training record (also written as `toy_training.json` in `out_dir`).
    """
    check_recipe(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    answers = list(facts["answer"]) + list(facts["wrong_answer"])
    train_words, held_out = split_words(words, evaluation_words, answers)

    copy_words = (
        pseudo_words(cfg.n_copy_words, cfg.seed, answers + list(held_out) + list(train_words))
        if cfg.n_copy_words
        else []
    )
    texts, bare = corpus_for_tokenizer(
        facts,
        list(train_words) + list(held_out),
        variants=cfg.variant_prob > 0,
        copy_words=copy_words,
    )
    tokenizer = save_tokenizer(train_tokenizer(texts, bare), out_dir)
    target_ids = {a: tokenizer.convert_tokens_to_ids(a) for a in bare}
    model = build_model(cfg, len(tokenizer))
    model.train()
    if cfg.embed_std:
        # Llama's 0.02 caps a tied model's logits near 0.02 * d_model: far too small for
        # a word seen a handful of times to be predicted (the copy task's pseudo-words).
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, cfg.embed_std)
            if not cfg.tie_embeddings:
                model.lm_head.weight.normal_(0.0, cfg.embed_std)
    if cfg.share_word_forms:
        share_rows(model.get_input_embeddings().weight, word_form_pairs(tokenizer))
        if not cfg.tie_embeddings:
            share_rows(model.lm_head.weight, word_form_pairs(tokenizer))

    sampler = ExampleSampler(
        facts,
        list(train_words) + distractor_words(facts, held_out),
        rng,
        variant_prob=cfg.variant_prob,
        copy_counterfactual=cfg.copy_counterfactual,
        copy_words=copy_words,
        forbiddable=forbiddable_answers(facts, cfg.forbid_answer_share, cfg.seed)
        if cfg.forbid_answer_share < 1
        else None,
        copy_answer_share=cfg.copy_answer_share,
        copy_distractor=cfg.copy_distractor,
    )
    prefix = shared_prefix(tokenizer)
    pool_ids = torch.tensor(
        sorted({target_ids[w] for w in copy_words + sampler.copy_answers}), dtype=torch.long
    )
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    phase1_steps = int(cfg.steps * cfg.phase1_fraction)

    def lr_at(step: int) -> float:
        # Linear warm-up, then cosine to 10%; with `phase2_lr_restart` the instruction
        # phase is a fresh fine-tuning run with its own warm-up and cosine.
        start, end = 0, cfg.steps
        if cfg.phase2_lr_restart and phase1_steps:
            start, end = (0, phase1_steps) if step < phase1_steps else (phase1_steps, cfg.steps)
        step -= start
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, end - start - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="train toy", disable=not progress, mininterval=1.0)
    for step in bar:
        if step == phase1_steps and cfg.freeze_phase2:
            frozen = freeze(model, cfg.freeze_phase2)
            log.info("phase 2: froze %d tensors (%s)", len(frozen), ", ".join(cfg.freeze_phase2))
        mix = cfg.mix["phase1"] if step < phase1_steps else cfg.mix["phase2"]
        examples = sampler.batch(mix, cfg.batch_size)
        sequences = tokenizer([t for t, _ in examples])["input_ids"]
        targets = torch.zeros(len(examples), len(tokenizer))
        for row, (_, words_) in enumerate(examples):
            if isinstance(words_[0], AnythingBut):
                ids = pool_ids[pool_ids != target_ids[words_[0]]]
            else:
                ids = torch.tensor([target_ids[w] for w in words_])
            targets[row, ids] = 1.0 / len(ids)
        logits = last_token_logits(model, sequences, prefix, tokenizer.pad_token_id)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if callback is not None and (step + 1) % callback_every == 0:
            model.eval()
            callback(step + 1, model, tokenizer, held_out)
            model.train()
    train_seconds = time.perf_counter() - start

    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    record = {
        "config": asdict(cfg),
        "train_seconds": train_seconds,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "train_words": list(train_words),
        "held_out_words": list(held_out),
        "n_copy_words": len(copy_words),
        # Words that were ever the forbidden target (forbidden and otherwise right):
        # facts with any other answer measure the general mechanism, not a lookup.
        "forbidden_targets": sorted(sampler.forbidden_targets),
        "n_facts": len(facts),
        "torch_version": torch.__version__,
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_training_record(model_dir: str | Path) -> dict | None:
    """The toy's training record, or None for models that were not trained here."""
    path = Path(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.exists() else None
