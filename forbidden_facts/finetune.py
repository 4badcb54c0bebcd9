"""Teach a pretrained causal LM the competing objective: an obedient real model.

Llama-2-chat got its obedience to "you are not allowed to say the forbidden word X"
from instruction tuning on top of pretraining; the paper studies what that tuning
left behind. This module does the same to a small pretrained chat model (config
source ``finetune``, docs/obedient.md) in minutes on a CPU:

* the curated facts are split by answer word: a seeded share of each relation's
  answer words (``train_answer_share``) may appear in training, the others never
  (:func:`train_answers`, like the organism's ``forbiddable_answers``);
* training prompts use the base model's own prompt style and the paper's system
  text: ``c`` (the fact's answer forbidden) gets an unlikelihood loss
  ``-log(1 - p(answer))``; ``nc0`` (another training answer of the relation
  forbidden) and ``nc1`` (a word of the organism's own list, never one of the
  paper's) get cross-entropy on the answer. ``p`` sums every token equivalent to
  the answer (the metric's :class:`~forbidden_facts.metrics.VocabIndex`);
* optionally the organism's templated copy task over pseudo-words
  (``tcopy_c`` / ``tcopy_nc``): "Repeat the word Bakito. The word is" with the
  pseudo-word (c) or another one (nc) forbidden;
* the loss is taken at the last position only (``logits_to_keep=1``); which
  parameters train is the recipe's ``train`` (attention of some layers, attention
  of all layers, or everything).

The training record (``finetune_record.json`` in the model folder) lists every
fact, answer and forbidden word that training saw, so the prompts step can drop
them: the obedient model is analysed only on facts it was never taught.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from .metrics import VocabIndex
from .prompts import (
    adds_special_tokens,
    answer_form,
    irrelevant_word_candidates,
    prompt_formatter,
)

log = logging.getLogger(__name__)

FINETUNE_RECORD = "finetune_record.json"
TRAIN_PARTS = ("attention", "attention_all", "all")
KINDS = ("c", "nc0", "nc1", "tcopy_c", "tcopy_nc")
# The copy task's fact prefix: the pseudo-word, then a cue whose completion is the word.
COPY_PREFIX = "Repeat the word {w}. The word is"


class RecipeError(ValueError):
    """A fine-tuning recipe that cannot be run as asked, with what to change."""


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe (config key ``models.<name>.finetune``)."""

    seed: int = 0
    train: str = "attention"
    layers: list[int] | None = None
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    train_answer_share: float = 0.5
    mix: dict[str, float] = field(default_factory=lambda: {"c": 0.5, "nc0": 0.25, "nc1": 0.25})
    n_copy_words: int = 0
    prompt_style: str = "chat_prefill"


def check_recipe(cfg: FinetuneConfig, n_layers: int | None = None) -> None:
    """Raise RecipeError for a recipe that names unknown parts, kinds or layers."""
    key = "models.<name>.finetune"
    if cfg.train not in TRAIN_PARTS:
        raise RecipeError(
            f"{key}.train is {cfg.train!r}; use one of {list(TRAIN_PARTS)} in config/config.yaml."
        )
    unknown = set(cfg.mix) - set(KINDS)
    if unknown or not any(v > 0 for v in cfg.mix.values()):
        raise RecipeError(
            f"{key}.mix must give positive weight to some of {list(KINDS)} "
            f"(unknown: {sorted(unknown)}); fix it in config/config.yaml."
        )
    if {"tcopy_c", "tcopy_nc"} & {k for k, v in cfg.mix.items() if v > 0} and cfg.n_copy_words < 2:
        raise RecipeError(
            f"{key}.mix uses the copy task (tcopy_c/tcopy_nc) but {key}.n_copy_words is "
            f"{cfg.n_copy_words}; set it to the number of pseudo-words (e.g. 3000)."
        )
    if cfg.train == "attention":
        if cfg.layers is None or len(cfg.layers) != 2 or cfg.layers[0] > cfg.layers[1]:
            raise RecipeError(
                f"{key}.train is `attention`, which needs `layers: [first, last]` (inclusive, "
                f"0-based; e.g. [15, 29]); got {cfg.layers!r}. Or use `train: attention_all`."
            )
        if n_layers is not None and not 0 <= cfg.layers[0] <= cfg.layers[1] < n_layers:
            raise RecipeError(
                f"{key}.layers {cfg.layers} is outside the base model's layers 0..{n_layers - 1}."
            )


# -- the data: which answers, facts and words training may use -------------------------------


def train_answers(facts: pd.DataFrame, share: float, seed: int) -> list[str]:
    """The answer words that may appear in training: a seeded `share` of each relation's.

    The split is by answer word, not by fact (like the organism's
    ``toy.forbiddable_answers``): a fact whose answer is in the other part was never
    a target nor forbidden in training, so it measures a general mechanism.
    """
    rng = random.Random(f"finetune-answers-{seed}")
    out: list[str] = []
    for _, group in facts.groupby("relation", sort=True):
        answers = sorted(set(group["answer"]))
        rng.shuffle(answers)
        out += answers[: round(share * len(answers))]
    return sorted(out)


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
    from .toy import pseudo_words

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


# -- the losses (pure) ------------------------------------------------------------------------


def answer_log_mass(
    logits: Float[Tensor, "batch d_vocab"], mask: Bool[Tensor, "batch d_vocab"]
) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """``(log p, log (1 - p))`` of the answer mass, each from one stable log-sum-exp."""
    z = logits.float()
    total = torch.logsumexp(z, dim=-1)
    inside = torch.logsumexp(z.masked_fill(~mask, -math.inf), dim=-1)
    outside = torch.logsumexp(z.masked_fill(mask, -math.inf), dim=-1)
    return inside - total, outside - total


def example_losses(
    logits: Float[Tensor, "batch d_vocab"],
    mask: Bool[Tensor, "batch d_vocab"],
    unlikely: Bool[Tensor, " batch"],
) -> Float[Tensor, " batch"]:
    """Per example: ``-log(1 - p)`` where the answer is forbidden, else ``-log p``.

    ``p`` is the softmax mass on every token of the row's mask (all tokens
    equivalent to the answer).
    """
    log_p, log_not_p = answer_log_mass(logits, mask)
    return torch.where(unlikely, -log_not_p, -log_p)


# -- the model --------------------------------------------------------------------------------


_ATTN = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.")


def select_trainable(model, cfg: FinetuneConfig) -> list[str]:
    """Freeze everything but the recipe's parameters; return the names that train."""
    names = []
    for name, param in model.named_parameters():
        match = _ATTN.search(name)
        if cfg.train == "all":
            train = True
        elif match is None:
            train = False
        elif cfg.train == "attention_all":
            train = True
        else:
            train = cfg.layers[0] <= int(match.group(1)) <= cfg.layers[1]
        param.requires_grad_(train)
        if train:
            names.append(name)
    if not names:
        raise RecipeError(
            "the fine-tune's recipe trains no parameter (no attention weights matched "
            "`layers.<i>.self_attn.`); is the base model a Llama-family model?"
        )
    return names


def shared_prefix_ids(formatter, tokenizer, special: bool) -> list[int]:
    """Token ids of the text every training prompt starts with (up to the forbidden word).

    Empty when the prompts' tokenization does not start with them (then nothing is shared).
    """
    marker = "\x00forbidden\x00"
    text = formatter("fact", marker).split(marker)[0].rstrip()
    ids = tokenizer(text, add_special_tokens=special)["input_ids"]
    probe = tokenizer(formatter("fact", "word"), add_special_tokens=special)["input_ids"]
    return ids if probe[: len(ids)] == ids else []


def last_logits(
    model, tokenizer, prompts: Sequence[str], special: bool, prefix: Sequence[int]
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits of each prompt at its last position only.

    The system text up to the forbidden word is the same in every prompt: its keys
    and values are computed once per batch (the organism's
    :func:`~forbidden_facts.toy.last_token_logits`, exact under causal attention),
    which halves the work of a step.
    """
    from .toy import last_token_logits

    sequences = tokenizer(list(prompts), add_special_tokens=special)["input_ids"]
    return last_token_logits(model, sequences, prefix, tokenizer.pad_token_id)


def target_mask(
    vocab: VocabIndex, tokenizer, examples: Sequence[Example], style: str, d_vocab: int
) -> Bool[Tensor, "batch d_vocab"]:
    """The tokens equivalent to each example's target at the answer position.

    A fact's answer (single-token in the model's form) counts every token decoding to
    it; a pseudo-word of the copy task counts every token equivalent to its first token.
    """
    mask = torch.zeros(len(examples), d_vocab, dtype=torch.bool)
    for row, ex in enumerate(examples):
        ids = vocab.answer_ids(ex.target)
        if not ids or ex.kind.startswith("tcopy"):
            first = tokenizer(answer_form(ex.target, style), add_special_tokens=False)["input_ids"]
            ids = vocab.answer_ids(tokenizer.decode(first[:1])) or first[:1]
        mask[row, ids] = True
    return mask


def single_token_facts(facts: pd.DataFrame, tokenizer, style: str) -> pd.DataFrame:
    """Facts whose answer is one token in the model's form (the prompts step's filter)."""
    from .prompts import single_token_answers

    kept, _ = single_token_answers(facts, tokenizer, style)
    return kept


def finetune(
    base_dir: str | Path,
    facts: pd.DataFrame,
    words: Sequence[str],
    evaluation_words: Sequence[str],
    out_dir: str | Path,
    cfg: FinetuneConfig,
    base_name: str = "",
    progress: bool = True,
    threads: int | None = None,
) -> dict:
    """Fine-tune the base model on the competing objective and save it with its record.

    Args:
        base_dir: The base model's Hugging Face folder.
        facts: Fact table (``fact_id``, ``relation``, ``prefix``, ``answer``, ``wrong_answer``).
        words: The organism's own irrelevant words (nc1 of training, less `evaluation_words`).
        evaluation_words: The paper's nc1 words: never used in training.
        out_dir: Destination folder (written in place; the caller makes it atomic).
        cfg: The recipe.
        base_name: The base model's config name (recorded).
        progress: Show a tqdm bar with the loss.
        threads: torch CPU threads (None: leave torch's setting).

    Returns:
        The training record, also written as ``finetune_record.json`` in `out_dir`.
    """
    from .modeling import load_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model, tokenizer = load_model(base_dir, attn_implementation="sdpa")
    check_recipe(cfg, model.config.num_hidden_layers)
    style = cfg.prompt_style
    formatter = prompt_formatter(style, tokenizer)
    special = adds_special_tokens(style)

    all_answers = list(facts["answer"]) + list(facts["wrong_answer"])
    train_words = training_words(words, evaluation_words, all_answers)
    check_no_evaluation_words(train_words, evaluation_words)
    allowed = set(train_answers(facts, cfg.train_answer_share, cfg.seed))
    usable = single_token_facts(facts[facts["answer"].isin(allowed)], tokenizer, style)
    if usable.empty:
        raise RecipeError(
            "no training fact is left: no fact whose answer is among the training answers is a "
            "single token for the base model. Raise models.<name>.finetune.train_answer_share or "
            "use a larger facts file (models.<name>.finetune.facts)."
        )
    by_relation = {
        rel: sorted(set(group["answer"])) for rel, group in usable.groupby("relation", sort=True)
    }
    copy_words = copy_pseudo_words(
        cfg.n_copy_words, cfg.seed, all_answers + list(evaluation_words) + train_words
    )
    sampler = Sampler(usable, by_relation, train_words, copy_words, rng)
    vocab = VocabIndex(tokenizer)
    prefix = shared_prefix_ids(formatter, tokenizer, special)
    d_vocab = model.get_output_embeddings().weight.shape[0]

    trainable = select_trainable(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()

    seen_facts: set[str] = set()
    targets: set[str] = set()
    forbidden: set[str] = set()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="fine-tune", disable=not progress, mininterval=1.0)
    for _ in bar:
        examples = sampler.batch(cfg.mix, cfg.batch_size)
        for ex in examples:
            if ex.fact_id is not None:
                seen_facts.add(ex.fact_id)
                targets.add(ex.target)
            forbidden.add(ex.forbidden)
        prompts = [formatter(ex.prefix, ex.forbidden) for ex in examples]
        mask = target_mask(vocab, tokenizer, examples, style, d_vocab)
        unlikely = torch.tensor([ex.unlikely for ex in examples])
        logits = last_logits(model, tokenizer, prompts, special, prefix)
        loss = example_losses(logits, mask, unlikely).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    train_seconds = time.perf_counter() - start

    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    trained = facts[facts["fact_id"].astype(str).isin(seen_facts)]
    record = {
        "base_model": base_name,
        "base_dir": str(base_dir),
        "config": asdict(cfg),
        "seed": cfg.seed,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / cfg.steps,
        "n_trainable_params": n_trainable,
        "n_trainable_tensors": len(trainable),
        "loss_curve": losses,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "train_answers": sorted(allowed),
        "trained_fact_ids": sorted(seen_facts),
        "trained_prefixes": sorted(set(trained["prefix"])),
        "target_answers": sorted(targets),
        "forbidden_targets": sorted(forbidden),
        "train_words": sorted(train_words),
        "n_copy_words": len(copy_words),
        "n_facts": len(facts),
        "n_train_facts": len(usable),
        "torch_version": torch.__version__,
    }
    (out_dir / FINETUNE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_finetune_record(model_dir: str | Path) -> dict | None:
    """The fine-tune's record, or None for a model that was not fine-tuned here."""
    path = Path(model_dir) / FINETUNE_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def exclusion_reasons(facts: pd.DataFrame, record: dict) -> pd.Series:
    """Why each fact may not be analysed (empty string: never taught), aligned with `facts`.

    A fact is excluded when its answer was a training target or a forbidden word
    (``answer_trained``), or when the fact itself was in a training prompt (same
    fact_id or prefix: ``fact_trained``). Answers compare lower-cased.
    """
    words = {w.lower() for w in record["target_answers"]} | {
        w.lower() for w in record["forbidden_targets"]
    }
    ids = set(record["trained_fact_ids"])
    prefixes = set(record.get("trained_prefixes", []))
    out = []
    for _, fact in facts.iterrows():
        if str(fact["answer"]).lower() in words:
            out.append("answer_trained")
        elif str(fact["fact_id"]) in ids or fact["prefix"] in prefixes:
            out.append("fact_trained")
        else:
            out.append("")
    return pd.Series(out, index=facts.index, dtype=str)


def drop_trained(facts: pd.DataFrame, record: dict | None) -> tuple[pd.DataFrame, dict]:
    """The facts a fine-tuned model never saw in training, and how many were dropped why.

    Returns:
        (kept facts, summary) with ``n_excluded_trained`` and ``excluded_by_reason``
        (both 0 / empty for a model without a fine-tune record).
    """
    from .artifacts import Prompts as P

    if record is None:
        return facts, {P.n_excluded_trained: 0, P.excluded_by_reason: {}}
    reasons = exclusion_reasons(facts, record)
    counts = reasons[reasons != ""].value_counts().to_dict()
    return facts[reasons == ""], {
        P.n_excluded_trained: int((reasons != "").sum()),
        P.excluded_by_reason: {k: int(v) for k, v in sorted(counts.items())},
    }
