"""The exhaustive token search: the California Attack's slot, every vocabulary token in it.

Each candidate token goes into the self-insertion's slot (after "obedient assistant" in the
nc1 prompt, `forbidden_facts.attack`) and we record each chosen head's attention from the
last position to it and the change in the correct answer's log-odds against a neutral
token of the same length class; a control puts the same tokens at the end of the system
text, far from the persona. The prefix before the slot runs once per fact and its key/value
cache serves every candidate batch; the heads' attention is rebuilt from their own queries
and keys (`forbidden_facts.architectures`), the rest of the forward pass runs in SDPA.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .architectures import adapter_for
from .metrics import VocabIndex, answer_logodds, to_log10
from .modeling import (
    chunks,
    common_start,
    continue_prefix,
    extend_prefix,
    final_logits,
    pad_left,
    shared_prefix,
)
from .prompts import (
    PERSONA_ANCHOR,
    SYSTEM_TEMPLATE,
    encoding_flag,
    insert_at_persona,
    persona_end,
)


def _ids_and_slot(tokenizer, text: str, end: int, add_special_tokens: bool):
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    # Every token that ends by character `end` (special tokens have empty (0, 0) spans).
    slot = sum(1 for _, stop in enc["offset_mapping"] if stop <= end)
    return enc["input_ids"], slot


def slot_ids(
    tokenizer, prompt: str, add_special_tokens: bool = True, forbidden_word: str | None = None
) -> tuple[list[int], int]:
    """Token ids of the nc1 prompt with " from" in the slot, and where a token goes after it.

    The slot is found from character offsets, so it does not matter how the
    tokenizer splits " from"; the persona is looked up inside the system text, never
    at a chat template's "assistant" role marker.

    Args:
        tokenizer: The model's tokenizer.
        prompt: The nc1 prompt as stored in the prompts table.
        add_special_tokens: How the prompt is encoded (its ``add_special_tokens``).
        forbidden_word: Unused; the same signature as :func:`control_slot_ids`.
    """
    end = persona_end(prompt) + len(" from")
    return _ids_and_slot(tokenizer, insert_at_persona(prompt, " from"), end, add_special_tokens)


def control_end(prompt: str, forbidden_word: str) -> int:
    """Character offset right after the system text (after its forbidden-word sentence)."""
    system = SYSTEM_TEMPLATE.format(persona=PERSONA_ANCHOR, forbidden_word=forbidden_word)
    start = prompt.find(system)
    if start < 0:
        raise ValueError(
            f"prompt has no system text forbidding {forbidden_word!r}: {prompt[:80]!r}"
        )
    return start + len(system)


def control_slot_ids(
    tokenizer, prompt: str, add_special_tokens: bool = True, forbidden_word: str = ""
) -> tuple[list[int], int]:
    """Like :func:`slot_ids`, with " from" at the end of the system text instead.

    This control slot lies far from the persona (after the forbidden-word
    sentence: before ``<</SYS>>`` in the llama2 template, before the end of the
    system message in a chat template): the same tokens inserted there show what
    any insertion does, as opposed to what naming something in the persona does.
    """
    end = control_end(prompt, forbidden_word)
    text = prompt[:end] + " from" + prompt[end:]
    return _ids_and_slot(tokenizer, text, end + len(" from"), add_special_tokens)


def candidate_tokens(tokenizer, sample: int | None = None, seed: int = 0) -> list[int]:
    """Every vocabulary id except the special tokens, or a seeded sample of `sample` of them.

    The exhaustive search costs one forward pass per token and fact (twice, with
    the control); on a CPU a 49k vocabulary needs a sample. The sample is sorted and
    the same on every run.
    """
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    if sample is not None and sample < len(ids):
        rng = np.random.default_rng(seed)
        ids = sorted(int(i) for i in rng.choice(ids, sample, replace=False))
    return ids


def length_classes(pieces: list[str], strings: list[str]) -> np.ndarray:
    """A token's length class: word start or not, times 1, 2-3, 4-6 or 7+ characters.

    Args:
        pieces: Each token's vocabulary piece (a word start begins with "▁" in
            SentencePiece, "Ġ" in byte-level BPE, or a space).
        strings: Each token's decoded text, whose stripped length is counted.

    Returns:
        One small integer per token; tokens of equal class fill the slot with text
        of about the same shape.
    """
    out = np.empty(len(pieces), dtype=np.int64)
    for i, (piece, text) in enumerate(zip(pieces, strings, strict=True)):
        n = len(text.strip())
        bucket = 0 if n <= 1 else 1 if n <= 3 else 2 if n <= 6 else 3
        word_start = piece[:1] in ("▁", "Ġ") or piece[:1].isspace()
        out[i] = 4 * int(word_start) + bucket
    return out


def neutral_reference(logodds: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each token's neutral reference: the index of its class's median token by log-odds.

    The neutral token of a class is the token whose answer log-odds is the
    class's (lower) median: a typical token of that length class in that slot.
    Measuring against it removes what inserting " from" plus any token does.

    Returns:
        For each token, the index (into `logodds`) of its class's neutral token.
    """
    ref = np.empty(len(logodds), dtype=np.int64)
    for cls in np.unique(classes):
        members = np.flatnonzero(classes == cls)
        order = members[np.argsort(logodds[members], kind="stable")]
        ref[members] = order[(len(order) - 1) // 2]
    return ref


def _slot_passes(model, prompts, cands, heads, masks, batch_size, desc, progress):
    """Answer log-odds and each head's last-position attention to the slot, per candidate.

    For several prompts (token ids, slot), each with its answer mask. Prompts with the
    same tokens before the slot (every fact's attack prompt: the system text up to the
    persona) run those once, and their key/value cache serves every batch; what the
    groups' tokens before their slots share (the control slots' system text up to the
    forbidden word) runs once for all of them. The tokens right after the slot that all of
    a group share (the system text up to the forbidden word) run once per batch of
    candidates for all of them, and each prompt then runs only the rest (in whatever
    attention the model was loaded with). A chosen head's
    attention from the last position is rebuilt from its own query (the adapter's
    `queries` of its attention module's input) and the keys its layer attended with;
    no layer returns its weights.

    Returns:
        Per prompt, (log-odds [candidate], {head label: attention [candidate]}).
    """
    adapter = adapter_for(model)
    by_layer: dict[int, list[tuple[str, int]]] = {}
    for label, layer, head in heads:
        by_layer.setdefault(layer, []).append((label, head))
    keep = sorted(by_layer)
    queries: dict[int, torch.Tensor] = {}

    def keep_query(layer: int):
        def hook(module, args, kwargs):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            cos, sin = kwargs["position_embeddings"]
            last = (cos[:, -1:], sin[:, -1:])
            queries[layer] = adapter.queries(layer, hidden[:, -1:], last)[:, :, 0]

        return hook

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, slot) in enumerate(prompts):
        groups.setdefault(tuple(ids[:slot]), []).append(i)
    lo_all = [[] for _ in prompts]
    attn_all = [{label: [] for label, _, _ in heads} for _ in prompts]
    handles = [
        adapter.attention(layer).register_forward_pre_hook(keep_query(layer), with_kwargs=True)
        for layer in by_layer
    ]
    # What every group's tokens before the slot start with (the system text up to the
    # forbidden word, for the control slots of different facts) runs once for all groups.
    common = common_start(list(groups))
    try:
        top = shared_prefix(model, common, keep=keep) if len(groups) > 1 and common else None
        for before, members in groups.items():
            slot = len(before)
            rests = [prompts[i][0][slot:] for i in members]
            # Each prompt keeps at least its last token to itself (its logits are read there).
            shared = (
                common_start(rests)[: min(len(r) for r in rests) - 1] if len(members) > 1 else []
            )
            if top is None:
                head = shared_prefix(model, list(before), keep=keep)
            elif slot > top.length:
                head = extend_prefix(model, top, torch.as_tensor([before[top.length :]]))
            else:
                head = top
            for sl in tqdm(
                list(chunks(len(cands), batch_size)),
                desc=desc,
                disable=not progress,
                leave=False,
            ):
                first = torch.as_tensor(cands[sl], dtype=torch.long).unsqueeze(1)
                rows = len(first)
                start = torch.cat(
                    [first, torch.as_tensor(shared, dtype=torch.long).expand(rows, -1)], 1
                )
                prefix, own = head, start
                if shared:
                    prefix, own = extend_prefix(model, head, start), start[:, :0]
                for i, rest in zip(members, rests, strict=True):
                    tail = torch.as_tensor(rest[len(shared) :], dtype=torch.long).expand(rows, -1)
                    logits = continue_prefix(model, prefix, torch.cat([own, tail], 1)).float()
                    lo_all[i].append(answer_logodds(logits, masks[i].expand(rows, -1)).cpu())
                    for layer, chosen in by_layer.items():
                        pattern = adapter.last_position_pattern(
                            layer, queries[layer], prefix.last_keys(layer), [h for _, h in chosen]
                        )
                        for j, (label, _) in enumerate(chosen):
                            attn_all[i][label].append(pattern[:, j, slot].cpu())
    finally:
        for handle in handles:
            handle.remove()
    return [
        (torch.cat(lo).numpy(), {label: torch.cat(v).numpy() for label, v in attn.items()})
        for lo, attn in zip(lo_all, attn_all, strict=True)
    ]


def fact_frames(
    fact: pd.Series,
    heads: list[tuple[str, int, int]],
    cands: list[int],
    pieces: list[str],
    classes: np.ndarray,
    lo_base: float,
    passes: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]],
) -> list[pd.DataFrame]:
    """One fact's rows of the token search, one frame per head (see :func:`token_search`).

    Args:
        passes: ``attack`` and ``control``: each the candidates' answer log-odds and,
            per head label, their last-position attention to the slot.
    """
    lo, attn = passes["attack"]
    lo_ctl, attn_ctl = passes["control"]
    ref, ref_ctl = neutral_reference(lo, classes), neutral_reference(lo_ctl, classes)
    frames = []
    for label, _, _ in heads:
        order = np.argsort(-attn[label], kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        frames.append(
            pd.DataFrame(
                {
                    "component": label,
                    "fact_id": fact["fact_id"],
                    "token": pieces,
                    "token_id": cands,
                    "attention": attn[label],
                    "delta_logodds_log10": to_log10(lo - lo[ref]),
                    "rank": rank,
                    "length_class": classes,
                    "neutral_token": [pieces[i] for i in ref],
                    "delta_vs_no_insertion_log10": to_log10(lo - lo_base),
                    "control_attention": attn_ctl[label],
                    "control_delta_logodds_log10": to_log10(lo_ctl - lo_ctl[ref_ctl]),
                    "control_neutral_token": [pieces[i] for i in ref_ctl],
                }
            )
        )
    return frames


@torch.no_grad()
def token_search(
    model,
    tokenizer,
    facts: pd.DataFrame,
    heads: list[tuple[str, int, int]],
    batch_size: int = 256,
    vocab: VocabIndex | None = None,
    progress: bool = True,
    n_tokens: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Place every vocabulary token in the slot; record head attention and Δ log-odds.

    Each token goes right after "obedient assistant from" in the nc1 prompt. Its
    effect is measured against the same prompt with the slot filled by a neutral
    token of the same length class (:func:`length_classes`,
    :func:`neutral_reference`), so the effect of inserting " from" and a token
    as such is not mixed in. A control puts the same tokens after " from" at the
    end of the system text (:func:`control_slot_ids`), far from the persona, with
    its own neutral reference.

    Args:
        facts: One row per fact: ``fact_id``, ``prefix``, ``answer``, ``forbidden_word`` and
            ``prompt`` (nc1).
        heads: (label, layer, head) of the heads to record.
        n_tokens: Search a seeded sample of this many tokens (None: every token).
        seed: Seed of that sample.

    Returns:
        ``component``, ``fact_id``, ``token``, ``token_id``, ``attention``,
        ``delta_logodds_log10`` (vs the neutral token) and ``rank`` (0 = the token
        the head attends to most for that fact); ``length_class``,
        ``neutral_token``, ``delta_vs_no_insertion_log10`` (vs the nc1 prompt
        without " from"), and the control's ``control_attention``,
        ``control_delta_logodds_log10`` and ``control_neutral_token``.
    """
    vocab = vocab or VocabIndex(tokenizer)
    cands = candidate_tokens(tokenizer, n_tokens, seed)
    specials = encoding_flag(facts)
    pieces = tokenizer.convert_ids_to_tokens(cands)
    classes = length_classes(pieces, [vocab.strings[c] for c in cands])
    rows = [fact for _, fact in facts.iterrows()]
    masks = [vocab.answer_mask([fact["answer"]], len(vocab.strings)) for fact in rows]
    # The prompts without " from", in batches (their shared system text runs once a batch).
    base_ids = [tokenizer(f["prompt"], add_special_tokens=specials)["input_ids"] for f in rows]
    lo_base = []
    for sl in chunks(len(rows), batch_size):
        logits = final_logits(model, pad_left(base_ids[sl], 0))
        lo_base += answer_logodds(logits, torch.cat(masks[sl])).tolist()
    passes = {}
    for kind, finder in (("attack", slot_ids), ("control", control_slot_ids)):
        prompts = [
            finder(tokenizer, fact["prompt"], specials, fact["forbidden_word"]) for fact in rows
        ]
        passes[kind] = _slot_passes(
            model, prompts, cands, heads, masks, batch_size, f"token search ({kind})", progress
        )
    frames = []
    for i, fact in enumerate(rows):
        per_fact = {kind: passes[kind][i] for kind in passes}
        frames += fact_frames(fact, heads, cands, pieces, classes, lo_base[i], per_fact)
    return pd.concat(frames, ignore_index=True)
