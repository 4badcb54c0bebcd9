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

from .data import (  # noqa: F401
    Example,
    Sampler,
    check_no_evaluation_words,
    copy_pseudo_words,
    train_answers,
    training_words,
)
from .recipe import (  # noqa: F401
    COPY_PREFIX,
    FINETUNE_RECORD,
    KINDS,
    TRAIN_PARTS,
    FinetuneConfig,
    RecipeError,
    check_recipe,
)
from .record import (  # noqa: F401
    RECORD_SHA256,
    FinetuneRecordError,
    checked_record,
    drop_trained,
    exclusion_reasons,
    finetune_chain,
    read_finetune_record,
    record_fingerprint,
    taught_words,
    trained_records,
)

# The training itself (torch) is imported on first use, so that the workflow's plan can
# read records (`record_fingerprint`) without loading torch.
_TRAINING = (
    "answer_log_mass",
    "example_losses",
    "finetune",
    "last_logits",
    "select_trainable",
    "shared_prefix_ids",
    "single_token_facts",
    "target_mask",
)


def __getattr__(name: str):
    if name in _TRAINING:
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
