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
"""

from __future__ import annotations

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
from tqdm.auto import tqdm

from .modeling import pad_left
from .prompts import PERSONA_ANCHOR, PROMPT_TEMPLATE, format_prompt, irrelevant_word_candidates
from .tokenizer import save_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

TRAINING_RECORD = "toy_training.json"


@dataclass
class ToyConfig:
    """Hyper-parameters of the model organism (config key `toy`)."""

    seed: int = 0
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 8
    n_kv_heads: int = 4
    d_mlp: int = 256
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    phase1_fraction: float = 0.4
    mix: dict = field(
        default_factory=lambda: {
            "phase1": {"nc": 0.7, "copy": 0.3},
            "phase2": {"pair": 0.7, "nc": 0.15, "copy": 0.15},
        }
    )
    tie_embeddings: bool = False
    variant_prob: float = 0.0
    copy_counterfactual: float = 0.0
    threads: int = 2


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
    """Draws (text, target word) training examples of each kind.

    Args:
        variant_prob: Share of templated prompts that use a reworded system prompt.
        copy_counterfactual: Share of copy examples whose context states another answer
            of the relation (then only copying, not recall, gives the target).
    """

    def __init__(
        self,
        facts: pd.DataFrame,
        train_words: Sequence[str],
        rng: random.Random,
        variant_prob: float = 0.0,
        copy_counterfactual: float = 0.0,
    ):
        self.facts = facts.reset_index(drop=True)
        self.words = list(train_words)
        self.rng = rng
        self.variant_prob = variant_prob
        self.copy_counterfactual = copy_counterfactual
        self.by_relation = {
            rel: sorted(set(group["answer"])) for rel, group in self.facts.groupby("relation")
        }

    def _fact(self):
        return self.facts.iloc[self.rng.randrange(len(self.facts))]

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
        fact = self._fact()
        others = [a for a in self.by_relation[fact["relation"]] if a != fact["answer"]]
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
        fact = self._fact()
        others = [a for a in self.by_relation[fact["relation"]] if a != fact["answer"]]
        word = self.rng.choice(self.words) if self.rng.random() < 0.5 else self.rng.choice(others)
        return [
            (self._prompt(fact["prefix"], fact["answer"]), others),
            (self._prompt(fact["prefix"], word), [fact["answer"]]),
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


def corpus_for_tokenizer(
    facts: pd.DataFrame, words: Sequence[str], variants: bool = False
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


def train_toy(
    facts: pd.DataFrame,
    words: Sequence[str],
    out_dir: str | Path,
    cfg: ToyConfig,
    progress: bool = True,
    callback=None,
    evaluation_words: Sequence[str] = (),
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
            250 steps (for experiments on the training recipe).
        evaluation_words: Words the organism is evaluated on: never trained on, but
            covered by the tokenizer.

    Returns:
        The training record (also written as `toy_training.json` in `out_dir`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    answers = list(facts["answer"]) + list(facts["wrong_answer"])
    train_words, held_out = split_words(words, evaluation_words, answers)

    texts, bare = corpus_for_tokenizer(
        facts, list(train_words) + list(held_out), variants=cfg.variant_prob > 0
    )
    tokenizer = save_tokenizer(train_tokenizer(texts, bare), out_dir)
    target_ids = {a: tokenizer.convert_tokens_to_ids(a) for a in bare}
    model = build_model(cfg, len(tokenizer))
    model.train()

    sampler = ExampleSampler(
        facts,
        list(train_words) + distractor_words(facts, held_out),
        rng,
        variant_prob=cfg.variant_prob,
        copy_counterfactual=cfg.copy_counterfactual,
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
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="train toy", disable=not progress, mininterval=1.0)
    for step in bar:
        mix = cfg.mix["phase1"] if step < phase1_steps else cfg.mix["phase2"]
        examples = sampler.batch(mix, cfg.batch_size)
        ids = tokenizer([t for t, _ in examples])["input_ids"]
        batch = pad_left(ids, tokenizer.pad_token_id)
        targets = torch.zeros(len(examples), len(tokenizer))
        for row, (_, words_) in enumerate(examples):
            targets[row, [target_ids[w] for w in words_]] = 1.0 / len(words_)
        logits = model(**batch.as_kwargs(), logits_to_keep=1, use_cache=False).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if callback is not None and (step + 1) % 250 == 0:
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
        "n_facts": len(facts),
        "torch_version": torch.__version__,
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_training_record(model_dir: str | Path) -> dict | None:
    """The toy's training record, or None for models that were not trained here."""
    path = Path(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.exists() else None
