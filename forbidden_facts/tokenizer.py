"""A SentencePiece-style tokenizer for the embedded model organism.

Built like Llama-2's: BPE over "▁"-marked words (Metaspace, with "▁" prepended
to the first word), byte fallback for anything unseen (``<0x0A>`` for newline),
``<unk>``/``<s>``/``</s>`` at ids 0-2 and BOS added to every sequence. Two
properties matter for the paper's metric and are tested: the template's final
space becomes a lone "▁" token, and every answer is a single token both as
"▁California" (after a space) and as "California" (right after the lone "▁").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
SPACE = "▁"


def _pre_tokenizer(prepend_scheme: str) -> pre_tokenizers.PreTokenizer:
    # Newlines are isolated so that they fall back to the <0x0A> byte, like Llama's;
    # full stops and commas are isolated so "California." is "▁California" + ".".
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=prepend_scheme, split=True),
            pre_tokenizers.Split(Regex("[\n.,]"), behavior="isolated"),
        ]
    )


def train_tokenizer(texts: Iterable[str], bare_words: Iterable[str]) -> Tokenizer:
    """Train the toy's BPE tokenizer so that every word it sees is one token.

    Args:
        texts: Training texts (the prompts); each word becomes a "▁word" token.
        bare_words: Words that must also exist without "▁" (the answers, which the
            model emits right after the prompt's lone "▁").

    Returns:
        A `tokenizers.Tokenizer` with byte fallback and a BOS post-processor.
    """
    trainer_tok = Tokenizer(models.BPE())
    # During training no "▁" is prepended, so a bare word stays bare; texts get a
    # leading space instead, which plays the role of Llama's prepended "▁".
    trainer_tok.pre_tokenizer = _pre_tokenizer("never")
    corpus = [" " + t for t in texts] + list(bare_words) + [" "]
    trainer = trainers.BpeTrainer(vocab_size=1_000_000, show_progress=False, min_frequency=1)
    trainer_tok.train_from_iterator(corpus, trainer)
    # Rebuild with Llama's id layout: specials, then the 256 byte tokens, then BPE pieces.
    model_state = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = {}
    for tok in (*SPECIAL_TOKENS, *BYTE_TOKENS):
        vocab[tok] = len(vocab)
    for tok, _ in sorted(model_state["vocab"].items(), key=lambda kv: kv[1]):
        if tok not in vocab and tok != "\n":
            vocab[tok] = len(vocab)
    merges = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]
    ]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = _pre_tokenizer("first")
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` as a transformers tokenizer with Llama's specials."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> PreTrainedTokenizerFast:
    """Save the tokenizer so that `AutoTokenizer.from_pretrained(directory)` loads it."""
    hf = wrap_tokenizer(tok)
    hf.save_pretrained(directory)
    return hf
