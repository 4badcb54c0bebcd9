"""The token search as it was before the shared prefix (commit e87b285): the reference.

Every candidate runs the whole prompt, with ``output_attentions=True`` (eager attention:
every layer's and head's weights) and no cache. Kept out of the package: the agreement
test (tests/test_attack.py) and the benchmark (benchmarks/token_search_benchmark.py)
compare `forbidden_facts.token_search.token_search` with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from forbidden_facts.metrics import VocabIndex, answer_logodds
from forbidden_facts.modeling import chunks, final_logits, input_device, pad_left
from forbidden_facts.prompts import encoding_flag
from forbidden_facts.token_search import (
    candidate_tokens,
    control_slot_ids,
    fact_frames,
    length_classes,
    slot_ids,
)


def reference_slot_pass(
    model, ids: list[int], slot: int, cands: list[int], heads, mask1, batch_size: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Answer log-odds and each head's last-position attention to the slot (whole prompts)."""
    if model.config._attn_implementation != "eager":
        raise ValueError("the reference reads output_attentions: load the model with eager")
    attn_all = {label: [] for label, _, _ in heads}
    lo_all = []
    for sl in chunks(len(cands), batch_size):
        batch_ids = [ids[:slot] + [c] + ids[slot:] for c in cands[sl]]
        batch = pad_left(batch_ids, 0).to(input_device(model))
        out = model(**batch.as_kwargs(), output_attentions=True, use_cache=False, logits_to_keep=1)
        logits = out.logits[:, -1].float()
        lo_all.append(answer_logodds(logits, mask1.expand(len(logits), -1)).cpu())
        for label, layer, head in heads:
            # left padding: equal lengths here, so the slot index is the same in every row
            attn_all[label].append(out.attentions[layer][:, head, -1, slot].float().cpu())
    attn = {label: torch.cat(v).numpy() for label, v in attn_all.items()}
    return torch.cat(lo_all).numpy(), attn


@torch.no_grad()
def reference_token_search(
    model,
    tokenizer,
    facts: pd.DataFrame,
    heads: list[tuple[str, int, int]],
    batch_size: int = 256,
    vocab: VocabIndex | None = None,
    n_tokens: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """`token_search`'s table from `reference_slot_pass` (same arguments, no progress bar)."""
    vocab = vocab or VocabIndex(tokenizer)
    cands = candidate_tokens(tokenizer, n_tokens, seed)
    specials = encoding_flag(facts)
    pieces = tokenizer.convert_ids_to_tokens(cands)
    classes = length_classes(pieces, [vocab.strings[c] for c in cands])
    frames = []
    for _, fact in facts.iterrows():
        base_ids = tokenizer(fact["prompt"], add_special_tokens=specials)["input_ids"]
        mask1 = vocab.answer_mask([fact["answer"]], len(vocab.strings))
        lo_base = answer_logodds(final_logits(model, pad_left([base_ids], 0)), mask1).item()
        passes = {}
        for kind, finder in (("attack", slot_ids), ("control", control_slot_ids)):
            ids, slot = finder(tokenizer, fact["prompt"], specials, fact["forbidden_word"])
            passes[kind] = reference_slot_pass(model, ids, slot, cands, heads, mask1, batch_size)
        frames += fact_frames(fact, heads, cands, pieces, classes, lo_base, passes)
    return pd.concat(frames, ignore_index=True)
