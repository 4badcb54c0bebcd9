"""First-order and cumulative patching of components between prompt pairs.

For a pair (c, nc_j) with final residuals R_c, R_nc and components r_i:

* nc->c: lo(norm_unembed(R_nc + r_i(c) - r_i(nc))) - lo(nc), the ranking quantity;
* c->nc: lo(norm_unembed(R_c + r_i(nc) - r_i(c))) - lo(c).

First order means downstream components are not recomputed, so one forward pass
per prompt suffices; the patched residuals go through final norm + lm_head in
batches (forbidden_facts/unembedding.py). Cumulative patching adds the top-k
components' deltas together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .decompose import Decomposition, decompose
from .metrics import VocabIndex, answer_index, to_log10
from .modeling import chunks, encode
from .prompts import encoding_flag
from .unembedding import base_logodds, patched_logodds, unnormed_bases

PAIRS = ("nc0", "nc1")
DIRECTIONS = ("nc_to_c", "c_to_nc")


def first_order_rows(
    base_resid: Float[Tensor, "batch d_model"],
    source: Float[Tensor, "batch component d_model"],
    target: Float[Tensor, "batch component d_model"],
) -> Float[Tensor, "batch component d_model"]:
    """Residuals of `target`'s prompt with one component at a time taken from `source`.

    Row i is ``base_resid + source[:, i] - target[:, i]`` where base_resid is the
    target prompt's residual.
    """
    return base_resid[:, None, :] + (source - target)


def cumulative_rows(
    base_resid: Float[Tensor, "batch d_model"],
    source: Float[Tensor, "batch component d_model"],
    target: Float[Tensor, "batch component d_model"],
    order: Int[Tensor, " k"],
) -> Float[Tensor, "batch k d_model"]:
    """Residuals with the first 1..k components of `order` patched in together."""
    deltas = (source - target)[:, order]
    return base_resid[:, None, :] + deltas.cumsum(dim=1)


def _decompose_kinds(model, tokenizer, facts: pd.DataFrame) -> dict[str, Decomposition]:
    """One forward pass over the c, nc0 and nc1 prompts of a batch of facts."""
    kinds = ("c", *PAIRS)
    prompts = [p for k in kinds for p in facts[f"prompt_{k}"]]
    ids = [f"{f} ({k})" for k in kinds for f in facts["fact_id"]]
    batch = encode(tokenizer, prompts, add_special_tokens=encoding_flag(facts))
    decomp = decompose(model, batch, check=True, ids=ids)
    n = len(facts)
    return {
        k: Decomposition(
            decomp.components[i * n : (i + 1) * n],
            decomp.labels,
            decomp.resid[i * n : (i + 1) * n],
            decomp.logits[i * n : (i + 1) * n],
        )
        for i, k in enumerate(kinds)
    }


def wide_prompts(prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per fact: fact_id, answer, prompt_c, prompt_nc0, prompt_nc1, add_special_tokens."""
    wide = prompts.pivot(index="fact_id", columns="kind", values="prompt")
    wide.columns = [f"prompt_{k}" for k in wide.columns]
    wide["add_special_tokens"] = encoding_flag(prompts)
    answers = prompts.drop_duplicates("fact_id").set_index("fact_id")["answer"]
    order = prompts.drop_duplicates("fact_id")["fact_id"]
    return wide.join(answers).loc[order].reset_index()


def attribute(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    batch_size: int = 8,
    row_batch: int = 4096,
    vocab: VocabIndex | None = None,
    progress: bool = True,
) -> Iterator[pd.DataFrame]:
    """First-order patching of every component, both pairs and both directions.

    Args:
        model: A Llama-family causal LM.
        tokenizer: Its tokenizer.
        prompts: The prompts table (rows for c, nc0, nc1) of the facts to attribute.
        batch_size: Facts per forward pass (3 prompts each).
        row_batch: Patched rows per norm + lm_head call.
        vocab: Prebuilt VocabIndex.
        progress: Show a progress bar over fact batches.

    Yields:
        Long tables with ``fact_id``, ``pair``, ``direction``, ``component``,
        ``delta_logodds`` (natural log), one per batch of facts.
    """
    vocab = vocab or VocabIndex(tokenizer)
    facts = wide_prompts(prompts)
    labels = None
    for sl in tqdm(list(chunks(len(facts), batch_size)), desc="attribution", disable=not progress):
        part = facts.iloc[sl]
        with torch.no_grad():
            dec = _decompose_kinds(model, tokenizer, part)
            labels = dec["c"].labels
            mask = vocab.answer_mask(list(part["answer"]), dec["c"].logits.shape[-1])
            ids, valid = answer_index(mask)
            # Baselines go through the same float32 path as the patched rows, with the
            # same unnormed logits, so a component that is equal in both prompts has a
            # delta of exactly 0.
            u = unnormed_bases(model, {k: d.resid for k, d in dec.items()})
            base = {
                k: base_logodds(model, d.resid, ids, valid, None if u is None else u[k])
                for k, d in dec.items()
            }
            frames = []
            for pair in PAIRS:
                c, nc = dec["c"], dec[pair]
                # nc->c rows are R_nc + (r(c) - r(nc)), c->nc rows R_c - (r(c) - r(nc)).
                to_c, to_nc = patched_logodds(
                    model,
                    nc.resid,
                    c.components - nc.components,
                    ids,
                    valid,
                    row_batch,
                    base_minus=c.resid,
                    unnormed=None if u is None else (u[pair], u["c"]),
                )
                frames.append(
                    _long(part["fact_id"], pair, "nc_to_c", labels, to_c - base[pair][:, None])
                )
                frames.append(
                    _long(part["fact_id"], pair, "c_to_nc", labels, to_nc - base["c"][:, None])
                )
        yield pd.concat(frames, ignore_index=True)


def _long(
    fact_ids, pair: str, direction: str, labels: Sequence[str], delta: Tensor
) -> pd.DataFrame:
    values = delta.cpu().numpy()
    n_facts, n_comp = values.shape
    return pd.DataFrame(
        {
            "fact_id": np.repeat(np.asarray(list(fact_ids), dtype=object), n_comp),
            "pair": pair,
            "direction": direction,
            "component": np.tile(np.asarray(labels, dtype=object), n_facts),
            "delta_logodds": values.reshape(-1),
        }
    )


def cumulative(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    order_labels: Sequence[str],
    batch_size: int = 8,
    row_batch: int = 4096,
    vocab: VocabIndex | None = None,
    progress: bool = True,
    pair_orders: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Patch the top-k components (nc->c) together for k = 1..len(order_labels).

    This is the second pass over the facts: the forward passes are re-run rather
    than storing every component of every prompt.

    Args:
        pair_orders: The dynamic order: ``{(fact_id, pair): labels}``, each pair patched
            in its own order (`identification.dynamic_orders`) up to k =
            len(order_labels); None patches every pair in `order_labels`.

    Returns:
        (values, fact_ids, pairs): values[p, k-1] is the natural log BF of pair p
        with the first k components patched together.
    """
    vocab = vocab or VocabIndex(tokenizer)
    facts = wide_prompts(prompts)
    results, fact_ids, pairs = [], [], []
    order = None
    for sl in tqdm(list(chunks(len(facts), batch_size)), desc="cumulative", disable=not progress):
        part = facts.iloc[sl]
        with torch.no_grad():
            dec = _decompose_kinds(model, tokenizer, part)
            if order is None:
                index = {label: i for i, label in enumerate(dec["c"].labels)}
                missing = [lbl for lbl in order_labels if lbl not in index]
                if missing:
                    raise ValueError(f"components not in this model: {missing[:5]}")
                order = torch.tensor([index[lbl] for lbl in order_labels])
            mask = vocab.answer_mask(list(part["answer"]), dec["c"].logits.shape[-1])
            ids, valid = answer_index(mask)
            u = unnormed_bases(model, {pair: dec[pair].resid for pair in PAIRS})
            for pair in PAIRS:
                c, nc = dec["c"], dec[pair]
                base_u = None if u is None else u[pair]
                lo_nc = base_logodds(model, nc.resid, ids, valid, base_u)
                if pair_orders is None:
                    deltas = (c.components - nc.components)[:, order.to(c.components.device)]
                else:
                    own = _own_orders(pair_orders, part["fact_id"], pair, index, len(order))
                    rows = torch.arange(len(part))[:, None]
                    deltas = (c.components - nc.components)[rows, own.to(c.components.device)]
                lo, _ = patched_logodds(
                    model,
                    nc.resid,
                    deltas.cumsum(dim=1),
                    ids,
                    valid,
                    row_batch,
                    unnormed=None if base_u is None else (base_u,),
                )
                results.append((lo - lo_nc[:, None]).double().cpu().numpy())
                fact_ids += list(part["fact_id"])
                pairs += [pair] * len(part)
    return np.concatenate(results, axis=0), fact_ids, pairs


def _own_orders(
    pair_orders: Mapping[tuple[str, str], Sequence[str]],
    fact_ids,
    pair: str,
    index: dict[str, int],
    k: int,
) -> Int[Tensor, "batch k"]:
    """Component indices of each fact's own order for `pair`, its first k."""
    out = []
    for fact in fact_ids:
        labels = pair_orders.get((str(fact), pair))
        if labels is None or len(labels) < k:
            raise ValueError(
                f"no dynamic order of {k} components for fact {fact!r}, pair {pair}: the "
                "orders come from this model's attribution.parquet on the same kept facts; "
                "rerun merge_attribution"
            )
        out.append([index[lbl] for lbl in labels[:k]])
    return torch.tensor(out, dtype=torch.long)


def shard_facts(fact_ids: list[str], shard: int, n_shards: int) -> list[str]:
    """Contiguous block `shard` of `n_shards` over the facts in dataset order."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    blocks = np.array_split(np.arange(len(fact_ids)), n_shards)
    return [fact_ids[i] for i in blocks[shard]]


def cumulative_to_n_star(
    model,
    tokenizer,
    prompts: pd.DataFrame,
    order_labels: Sequence[str],
    lbf: pd.Series,
    k_min: int,
    batch_size: int = 8,
    row_batch: int = 4096,
) -> tuple[np.ndarray, list[str], list[str], np.ndarray, int | None]:
    """The cumulative curve, long enough to show N* and the same again after it.

    The curve first goes to `k_min` components; if N* lies beyond half of that,
    it is recomputed up to 2 N* (capped at every component), so the figure shows
    the curve settle after crossing the total effect.

    Args:
        lbf: natural log Bayes factor of every (fact_id, pair), indexed by both.
        k_min: shortest curve.

    Returns:
        (values_log10 [pairs, K], fact_ids, pairs, effect_log10 [pairs], N* or None).
    """
    from .identification import curve_length, n_star

    k = curve_length(len(order_labels), None, k_min)
    while True:
        values, fact_ids, pairs = cumulative(
            model, tokenizer, prompts, order_labels[:k], batch_size=batch_size, row_batch=row_batch
        )
        values = to_log10(values)
        effect = -to_log10(lbf.loc[list(zip(fact_ids, pairs, strict=True))].to_numpy())
        ns = n_star(values.mean(axis=0), float(effect.mean()))
        want = curve_length(len(order_labels), ns, k_min)
        if want <= k:
            return values, fact_ids, pairs, effect, ns
        k = want
