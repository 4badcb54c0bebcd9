"""The losses (pure), which parameters train, and the training loop."""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from ..metrics import VocabIndex
from ..prompts import adds_special_tokens, answer_form, prompt_formatter
from .data import (
    Example,
    Sampler,
    check_no_evaluation_words,
    copy_pseudo_words,
    train_answers,
    training_words,
)
from .recipe import FINETUNE_RECORD, FinetuneConfig, RecipeError, check_recipe

log = logging.getLogger(__name__)


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
    from ..toy import last_token_logits

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
    from ..prompts import single_token_answers

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
    from ..modeling import load_model

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
