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

The package: :mod:`.words` (which words are trained, held out, forbiddable),
:mod:`.corpus` (prompt rewordings, the tokenizer's corpus), :mod:`.sampler`
(training examples), :mod:`.model` (the network and its training-time forward pass),
:mod:`.recipe` (hyper-parameters and their check) and :mod:`.training` (schedule,
targets, steps and the training record).
"""

from .corpus import (
    COPY_PATTERNS,
    FORBID_CLAUSES,
    PERSONA_SENTENCE,
    TRUTH_SENTENCE,
    corpus_for_tokenizer,
    variant_prompt,
)
from .model import (
    FREEZABLE,
    build_model,
    freeze,
    last_token_logits,
    share_rows,
    shared_prefix,
    word_form_pairs,
)
from .recipe import ToyConfig, check_recipe
from .sampler import AnythingBut, ExampleSampler
from .training import (
    TRAINING_RECORD,
    init_model,
    lr_factor,
    make_optimizer,
    make_sampler,
    phase1_steps,
    read_training_record,
    soft_targets,
    train_step,
    train_toy,
    training_record,
    training_words,
)
from .words import (
    CONSONANTS,
    VOWELS,
    distractor_words,
    forbiddable_answers,
    pseudo_words,
    split_words,
)

__all__ = [
    "COPY_PATTERNS",
    "CONSONANTS",
    "FORBID_CLAUSES",
    "FREEZABLE",
    "PERSONA_SENTENCE",
    "TRAINING_RECORD",
    "TRUTH_SENTENCE",
    "VOWELS",
    "AnythingBut",
    "ExampleSampler",
    "ToyConfig",
    "build_model",
    "check_recipe",
    "corpus_for_tokenizer",
    "distractor_words",
    "forbiddable_answers",
    "freeze",
    "init_model",
    "last_token_logits",
    "lr_factor",
    "make_optimizer",
    "make_sampler",
    "phase1_steps",
    "pseudo_words",
    "read_training_record",
    "share_rows",
    "shared_prefix",
    "soft_targets",
    "split_words",
    "train_step",
    "train_toy",
    "training_record",
    "training_words",
    "variant_prompt",
    "word_form_pairs",
]
