"""Training the organism: the schedule, the soft targets, one step, the whole run and its record."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..tokenizer import save_tokenizer, train_tokenizer
from .corpus import corpus_for_tokenizer
from .model import (
    build_model,
    freeze,
    last_token_logits,
    share_rows,
    shared_prefix,
    word_form_pairs,
)
from .recipe import ToyConfig, check_recipe
from .sampler import AnythingBut, ExampleSampler
from .words import distractor_words, forbiddable_answers, pseudo_words, split_words

log = logging.getLogger("forbidden_facts.toy")

TRAINING_RECORD = "toy_training.json"


def lr_factor(
    step: int, steps: int, warmup_steps: int, phase1_steps: int = 0, restart: bool = False
) -> float:
    """The learning rate at `step` as a multiple of the peak rate.

    Linear warm-up over `warmup_steps`, then a cosine down to 10% at the end. With
    `restart` (config key `toy.phase2_lr_restart`) and a first phase of `phase1_steps`,
    the instruction phase is a fresh fine-tuning run with its own warm-up and cosine.

    Args:
        step: Optimiser step, counted from 0.
        steps: All steps of the training.
        warmup_steps: Steps of linear warm-up (of each phase, with `restart`).
        phase1_steps: Steps of the truthful phase.
        restart: Whether the instruction phase restarts the schedule.

    Returns:
        A factor in (0, 1].
    """
    start, end = 0, steps
    if restart and phase1_steps:
        start, end = (0, phase1_steps) if step < phase1_steps else (phase1_steps, steps)
    step -= start
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    frac = (step - warmup_steps) / max(1, end - start - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def phase1_steps(cfg: ToyConfig) -> int:
    """Steps of the truthful phase (the instruction phase takes the rest)."""
    return int(cfg.steps * cfg.phase1_fraction)


def training_words(
    facts: pd.DataFrame, words: Sequence[str], evaluation_words: Sequence[str], cfg: ToyConfig
) -> tuple[list[str], list[str], list[str]]:
    """The (trained, held-out, copy-task) words of a run.

    Args:
        facts: Curated fact table.
        words: The organism's own irrelevant words (config key `toy.train_words`).
        evaluation_words: Words the organism is evaluated on (never trained on).
        cfg: The recipe (``seed``, ``n_copy_words``).

    Returns:
        (train, held_out, copy_words): copy-task pseudo-words clear of all the others
        and of every answer (empty without ``toy.n_copy_words``).
    """
    answers = list(facts["answer"]) + list(facts["wrong_answer"])
    train, held_out = split_words(words, evaluation_words, answers)
    copy_words = (
        pseudo_words(cfg.n_copy_words, cfg.seed, answers + list(held_out) + list(train))
        if cfg.n_copy_words
        else []
    )
    return train, held_out, copy_words


def init_model(cfg: ToyConfig, tokenizer):
    """The untrained organism for `tokenizer`, in training mode (seeded by the caller).

    Applies ``toy.embed_std`` (a larger embedding initialisation) and
    ``toy.share_word_forms`` (one row for a word and its space-marked form).
    """
    model = build_model(cfg, len(tokenizer))
    model.train()
    if cfg.embed_std:
        # Llama's 0.02 caps a tied model's logits near 0.02 * d_model: far too small for
        # a word seen a handful of times to be predicted (the copy task's pseudo-words).
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, cfg.embed_std)
            if not cfg.tie_embeddings:
                model.get_output_embeddings().weight.normal_(0.0, cfg.embed_std)
    if cfg.share_word_forms:
        share_rows(model.get_input_embeddings().weight, word_form_pairs(tokenizer))
        if not cfg.tie_embeddings:
            share_rows(model.get_output_embeddings().weight, word_form_pairs(tokenizer))
    return model


def make_sampler(
    facts: pd.DataFrame,
    train_words: Sequence[str],
    held_out: Sequence[str],
    copy_words: Sequence[str],
    rng: random.Random,
    cfg: ToyConfig,
) -> ExampleSampler:
    """The example sampler of the recipe: own words plus fact-prefix distractors."""
    return ExampleSampler(
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


def make_optimizer(model, cfg: ToyConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms or biases)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )


def soft_targets(
    examples: Sequence[tuple[str, list[str]]],
    target_ids: dict[str, int],
    pool_ids: Tensor,
    vocab_size: int,
) -> Float[Tensor, "batch d_vocab"]:
    """Target distributions: uniform over each example's target words.

    An :class:`AnythingBut` target is uniform over the copy-task pool (`pool_ids`)
    without its word.
    """
    targets = torch.zeros(len(examples), vocab_size)
    for row, (_, words) in enumerate(examples):
        if isinstance(words[0], AnythingBut):
            ids = pool_ids[pool_ids != target_ids[words[0]]]
        else:
            ids = torch.tensor([target_ids[w] for w in words])
        targets[row, ids] = 1.0 / len(ids)
    return targets


def train_step(
    model,
    opt: torch.optim.Optimizer,
    sched,
    sequences: Sequence[Sequence[int]],
    targets: Float[Tensor, "batch d_vocab"],
    prefix: Sequence[int],
    pad_id: int,
) -> float:
    """One optimiser step on a batch (cross-entropy at the last token, clipped at 1)."""
    logits = last_token_logits(model, sequences, prefix, pad_id)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss.item()


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
    train_words, held_out, copy_words = training_words(facts, words, evaluation_words, cfg)
    texts, bare = corpus_for_tokenizer(
        facts,
        list(train_words) + list(held_out),
        variants=cfg.variant_prob > 0,
        copy_words=copy_words,
    )
    tokenizer = save_tokenizer(train_tokenizer(texts, bare), out_dir)
    target_ids = {a: tokenizer.convert_tokens_to_ids(a) for a in bare}
    model = init_model(cfg, tokenizer)
    sampler = make_sampler(facts, train_words, held_out, copy_words, rng, cfg)
    prefix = shared_prefix(tokenizer)
    pool_ids = torch.tensor(
        sorted({target_ids[w] for w in copy_words + sampler.copy_answers}), dtype=torch.long
    )
    opt = make_optimizer(model, cfg)
    n_phase1 = phase1_steps(cfg)
    schedule = partial(
        lr_factor,
        steps=cfg.steps,
        warmup_steps=cfg.warmup_steps,
        phase1_steps=n_phase1,
        restart=cfg.phase2_lr_restart,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    start = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="train toy", disable=not progress, mininterval=1.0)
    for step in bar:
        if step == n_phase1 and cfg.freeze_phase2:
            frozen = freeze(model, cfg.freeze_phase2)
            log.info("phase 2: froze %d tensors (%s)", len(frozen), ", ".join(cfg.freeze_phase2))
        mix = cfg.mix["phase1"] if step < n_phase1 else cfg.mix["phase2"]
        examples = sampler.batch(mix, cfg.batch_size)
        sequences = tokenizer([t for t, _ in examples])["input_ids"]
        targets = soft_targets(examples, target_ids, pool_ids, len(tokenizer))
        losses.append(
            train_step(model, opt, sched, sequences, targets, prefix, tokenizer.pad_token_id)
        )
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
        if callback is not None and (step + 1) % callback_every == 0:
            model.eval()
            callback(step + 1, model, tokenizer, held_out)
            model.train()
    train_seconds = time.perf_counter() - start

    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    record = training_record(
        cfg, train_seconds, losses, train_words, held_out, copy_words, sampler, len(facts)
    )
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def training_record(
    cfg: ToyConfig,
    train_seconds: float,
    losses: Sequence[float],
    train_words: Sequence[str],
    held_out: Sequence[str],
    copy_words: Sequence[str],
    sampler: ExampleSampler,
    n_facts: int,
) -> dict:
    """The record written beside the weights (`toy_training.json`)."""
    return {
        "config": asdict(cfg),
        "train_seconds": train_seconds,
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "train_words": list(train_words),
        "held_out_words": list(held_out),
        "n_copy_words": len(copy_words),
        # Words that were ever the forbidden target (forbidden and otherwise right):
        # facts with any other answer measure the general mechanism, not a lookup.
        "forbidden_targets": sorted(sampler.forbidden_targets),
        "n_facts": n_facts,
        "torch_version": torch.__version__,
    }


def read_training_record(model_dir: str | Path) -> dict | None:
    """The toy's training record, or None for models that were not trained here."""
    path = Path(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.exists() else None
