"""Head analysis: OV suppression scores and attention to the forbidden word.

OV score (docs/science.md § Heads): unembed each head's OV image of every token embedding
(input norm of the head's layer, then V, then O, then final norm + unembedding; the
family's extras from its adapter: Gemma's embedding scale, Qwen2's value bias,
Gemma-2's post-attention norm and logit soft-cap),
take per-row log-odds in log10, and report mean diagonal minus mean
off-diagonal. Negative means the head suppresses the token it attends to.

The head's OV map has rank d_head, so the V x V logit matrix is computed as
(V x d_head) @ (d_head x V) in row chunks, never as a V x V x d_model product,
and never held in memory whole. RMSNorm of the head output only rescales rows:
norm(o) = o * g / rms(o), with ||o||^2 = v G v^T for G = W_O^T W_O.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from .architectures import adapter_for
from .artifacts import HEAD_COLUMNS
from .decompose import model_shape
from .modeling import chunks, encode, last_position_forward
from .prompts import encoding_flag
from .units import LN10


def row_logodds(logits: Float[Tensor, "row d_vocab"]) -> Float[Tensor, "row d_vocab"]:
    """Log-odds of every entry of each row's softmax, natural log, float64.

    Only a row's top entry can have p >= 1/2, so log(1 - p) is computed stably for
    it from the other logits, and with log1p(-p) for the rest.
    """
    z = logits.to(torch.float64)
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    logp = z - lse
    lo = logp - torch.log1p(-torch.exp(logp).clamp(max=0.5))
    top = z.argmax(dim=-1, keepdim=True)
    others = z.scatter(-1, top, -math.inf)
    lo_top = z.gather(-1, top) - torch.logsumexp(others, dim=-1, keepdim=True)
    return lo.scatter(-1, top, lo_top)


# Below this probability -log(1 - p) is taken as p + p^2/2 (the error, p^3/3 and less, sums to
# under 4e-7 per row); above it, exactly. At most 1/_SERIES_BELOW entries of a row are above.
_SERIES_BELOW = 1e-3


def row_logodds_sums(
    logits: Float[Tensor, "row d_vocab"], src: Int[Tensor, " row"]
) -> tuple[float, float]:
    """Sum over rows of (every entry's log-odds, the entry at `src`), as :func:`row_logodds`.

    The OV score only needs these two sums, so the log-odds matrix is never built. A row's
    log-odds sum is sum(log p) + sum(-log(1 - p)): the first is sum(z) - V lse, the second
    p + p^2/2 summed for the small entries (their p sum to one minus the large ones') and
    exact for the few above `_SERIES_BELOW`; one exp per entry in all (a 49k vocabulary
    makes this elementwise work the OV score's cost). A row whose top entry has p > 1/2
    is summed as :func:`row_logodds` does, its top log-odds from the other logits.
    Agrees with ``row_logodds`` to ~1e-6 relative (tests/test_heads.py).
    """
    z = logits.float()
    n_vocab = z.shape[-1]
    top_val, top = z.max(dim=-1)
    e = (z - top_val[:, None]).exp_()
    mass = e.sum(-1).double()  # the top entry's p is 1 / mass
    lse = top_val.double() + torch.log(mass)
    sums = z.sum(-1).double() - n_vocab * lse  # sum of log p
    sums += 1.0 + torch.linalg.vector_norm(e, dim=-1).double().square() / mass.square() / 2
    # The few entries above _SERIES_BELOW: their exact -log(1 - p) replaces their series
    # terms; a top entry with p > 1/2 is left to the rows below.
    big = mass < 2.0
    row, col = (e > _SERIES_BELOW * mass[:, None].float()).nonzero(as_tuple=True)
    apart = big[row] & (col == top[row])
    row, col = row[~apart], col[~apart]
    pl = e[row, col].double() / mass[row]
    sums.index_add_(0, row, -torch.log1p(-pl) - pl - pl * pl / 2)
    logp_src = z.gather(-1, src[:, None]).squeeze(-1).double() - lse
    lo_src = logp_src - torch.log1p(-torch.exp(logp_src).clamp(max=0.5))
    if big.any():
        # Rows whose top entry has p > 1/2: its log-odds from the other entries' mass.
        b = big.nonzero().squeeze(-1)
        others = e[b].scatter(-1, top[b, None], 0.0).sum(-1).double()
        if not (others > 0).all():  # every other entry underflows: the float64 reference
            lo = row_logodds(logits)
            return float(lo.sum()), float(lo.gather(-1, src[:, None]).sum())
        lo_top, p_top = -torch.log(others), 1.0 / mass[b]
        sums[b] += lo_top + torch.log(mass[b]) - p_top - p_top * p_top / 2
        at_top = src[b] == top[b]
        lo_src[b[at_top]] = lo_top[at_top]
    return float(sums.sum()), float(lo_src.sum())


def ov_logits(
    x: Float[Tensor, "row d_model"],
    w_v: Float[Tensor, "d_head d_model"],
    w_o: Float[Tensor, "d_model d_head"],
    unembed_o: Float[Tensor, "d_vocab d_head"],
    final_eps: float,
    b_v: Float[Tensor, " d_head"] | None = None,
    gram_final: Float[Tensor, "d_head d_head"] | None = None,
    post_eps: float | None = None,
    const: Float[Tensor, " d_vocab"] | None = None,
    cap: float | None = None,
) -> Float[Tensor, "row d_vocab"]:
    """Final-norm + unembedding logits of a head's OV image of normalised embeddings `x`.

    The head writes ``o = W_O v`` with ``v = W_V x (+ b_V)``. Everything after it is
    kept rank d_head: a post-attention RMSNorm (Gemma-2; its gain and, for a final
    LayerNorm, the centring are folded into the matrix ``P`` the final norm sees),
    the final norm's 1/rms from Gram matrices, and the unembedding folded onto the
    head's output, ``unembed_o = (W_U * g_final) @ P``.

    Args:
        x: Token embeddings after the head's layer input norm.
        w_v: The head's value weights (its KV group's, with grouped-query attention).
        w_o: The head's columns of o_proj.
        unembed_o: ``(W_U * g_final) @ P`` (P = w_o without a post-norm or centring).
        final_eps: Epsilon of the final norm.
        b_v: The head's value bias (Qwen2), or None.
        gram_final: ``P^T P`` where P differs from w_o (post-norm gain, centring); None: w_o's.
        post_eps: Epsilon of a post-attention RMSNorm (its rms comes from w_o's Gram); None: none.
        const: Logit offset of the final norm's bias and the unembedding bias, or None.
        cap: Final-logit soft-cap (Gemma-2), or None.
    """
    v = x @ w_v.T
    if b_v is not None:
        v = v + b_v
    d_model = w_o.shape[0]
    gram = w_o.T @ w_o
    scale = torch.ones_like(v[:, :1])
    if post_eps is not None:
        scale = torch.rsqrt(((v @ gram) * v).sum(-1, keepdim=True) / d_model + post_eps)
    gram_f = gram if gram_final is None else gram_final
    mean_sq = scale.pow(2) * ((v @ gram_f) * v).sum(-1, keepdim=True) / d_model
    logits = (v * (scale * torch.rsqrt(mean_sq + final_eps))) @ unembed_o.T
    if const is not None:
        logits = logits + const
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def ov_sample_rows(d_vocab: int, n_rows: int | None, seed: int = 0) -> Tensor | None:
    """A fixed random sample of `n_rows` source tokens for the OV score (None: all of them).

    A big vocabulary makes the full OV matrix costly (32000 x 32000 per head for
    Llama-2); a seeded sample gives the same score up to sampling noise and the
    same rows on every run.
    """
    if not n_rows or n_rows >= d_vocab:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(d_vocab, generator=gen)[:n_rows].sort().values


@torch.no_grad()
def ov_scores(
    model, vocab_chunk: int = 64, rows: Tensor | None = None, progress: bool = True
) -> np.ndarray:
    """OV suppression score (log10) of every head, shape [n_layers, n_heads].

    Args:
        model: A causal LM of a supported family (grouped-query heads read their KV group).
        vocab_chunk: Source tokens per chunk; memory is chunk x d_vocab. A small chunk's
            logits stay in the CPU's cache through the elementwise log-odds passes.
        rows: Optional subset of source token ids (a sample of the vocabulary for
            big models); default every token.
        progress: Show a progress bar over heads.
    """
    ad = adapter_for(model)
    n_layers, n_heads, d_head, n_kv = ad.n_layers, ad.n_heads, ad.d_head, ad.n_kv_heads
    group = n_heads // n_kv
    device = ad.lm_head.weight.device
    f32 = dict(device=device, dtype=torch.float32)
    d_vocab = ad.d_vocab
    rows = torch.arange(d_vocab, device=device) if rows is None else rows.to(device)
    # The source tokens' embeddings as the first layer sees them (Gemma scales them by
    # sqrt(d_model)): only the sampled rows, not a float32 copy of the whole matrix.
    embed = ad.embedding.weight[rows.to(ad.embedding.weight.device)].to(**f32) * ad.embed_scale
    w_u = ad.lm_head.weight.to(device)
    final = ad.final_norm
    final_w, final_eps = final.gain.to(**f32), final.eps
    const = None
    if final.bias is not None:
        const = w_u.float() @ final.bias.to(**f32)
    if ad.unembed_bias is not None:
        b_u = ad.unembed_bias.to(**f32)
        const = b_u if const is None else const + b_u
    # The final norm's gain folded into the unembedding once, not per head: the one
    # vocabulary x d_model float32 tensor of this stage (a half-precision lm_head is
    # promoted by the product itself, with no float32 copy beside it).
    w_u_gain = w_u * final_w
    scores = np.zeros((n_layers, n_heads))
    bar = tqdm(total=n_layers * n_heads, desc="OV scores", disable=not progress)
    for layer_idx in range(n_layers):
        _, _, w_v_full = ad.qkv(layer_idx)
        b_v_full = ad.qkv_bias(layer_idx)[2]
        w_v_all = w_v_full.to(**f32).reshape(n_kv, d_head, -1)
        b_v_all = None if b_v_full is None else b_v_full.to(**f32).reshape(n_kv, d_head)
        w_o_all = ad.w_o(layer_idx).to(**f32).reshape(-1, n_heads, d_head)
        post = ad.attn_post_norm(layer_idx)
        x = ad.input_norm(layer_idx)(embed).to(**f32)
        for h in range(n_heads):
            w_v, w_o = w_v_all[h // group], w_o_all[:, h]
            b_v = None if b_v_all is None else b_v_all[h // group]
            # What the final norm sees: the post-norm's gain, then a LayerNorm's centring.
            p = w_o if post is None else w_o * post.gain.to(**f32)[:, None]
            if final.kind == "layer":
                p = p - p.mean(0, keepdim=True)
            unembed_o = w_u_gain @ p
            gram_final = None if p is w_o else p.T @ p
            post_eps = None if post is None else post.eps
            diag_sum, all_sum, n_rows = 0.0, 0.0, 0
            for sl in chunks(len(rows), vocab_chunk):
                src = rows[sl]
                logits = ov_logits(
                    x[sl],
                    w_v,
                    w_o,
                    unembed_o,
                    final_eps,
                    b_v=b_v,
                    gram_final=gram_final,
                    post_eps=post_eps,
                    const=const,
                    cap=ad.logit_softcap,
                )
                total, diag = row_logodds_sums(logits, src)
                diag_sum += diag
                all_sum += total
                n_rows += len(src)
            mean_diag = diag_sum / n_rows
            mean_off = (all_sum - diag_sum) / (n_rows * (d_vocab - 1))
            scores[layer_idx, h] = (mean_diag - mean_off) / LN10
            bar.update()
    bar.close()
    return scores


def forbidden_spans(
    tokenizer, prompts: list[str], words: list[str], add_special_tokens: bool = True
) -> list[list[int]]:
    """Token positions (in the unpadded prompt) of each prompt's forbidden word.

    Found by character offsets, so it does not depend on how the word is split;
    `add_special_tokens` must match how the prompts are encoded (a BOS shifts them).
    """
    spans = []
    for prompt, word in zip(prompts, words, strict=True):
        marker = f"forbidden word {word}"
        start = prompt.rfind(marker)
        if start < 0:
            raise ValueError(
                f"prompt does not name its forbidden word {word!r}: {prompt[:80]!r}..."
            )
        start += len("forbidden word ")
        end = start + len(word)
        enc = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
        span = [
            i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > start and a < end and b > a
        ]
        if not span:
            raise ValueError(f"no token covers the forbidden word {word!r}")
        spans.append(span)
    return spans


@torch.no_grad()
def last_position_outputs(
    model, batch
) -> tuple[Float[Tensor, "batch d_vocab"], Float[Tensor, "batch layer head pos"], Tensor]:
    """One pass: the last position's logits, its attention in the batch's own layout
    (float32, CPU) and each row's padding width. The model must run eager attention."""
    out, shared = last_position_forward(model, batch, output_attentions=True)
    if out.attentions is None or out.attentions[0] is None:
        raise RuntimeError(
            "the model returned no attention weights: load it with attn_implementation='eager'"
        )
    logits = out.logits[:, -1, :]
    found = torch.stack([a[:, :, -1, :].float().cpu() for a in out.attentions], dim=1)
    pad = (batch.attention_mask == 0).sum(-1)
    if not shared:
        return logits, found, pad
    # Back to the batch's own layout: the shared prefix ran once, ahead of the rows'
    # left-padded rest, so a row's prefix keys move behind its padding.
    attn = torch.zeros(*found.shape[:-1], batch.input_ids.shape[1])
    for row, width in enumerate(pad.tolist()):
        attn[row, ..., width : width + shared] = found[row, ..., :shared]
        attn[row, ..., shared + width :] = found[row, ..., shared + width :]
    return logits, attn, pad


def last_position_attention(
    model, tokenizer, prompts: list[str], add_special_tokens: bool = True
) -> tuple[Tensor, Tensor]:
    """Attention from the final position, [batch, layer, head, pos], and the padding width."""
    _, attn, pad = last_position_outputs(model, encode(tokenizer, prompts, add_special_tokens))
    return attn, pad


def forbidden_attention(
    model, tokenizer, prompts: pd.DataFrame, batch_size: int = 16, progress: bool = True
) -> pd.DataFrame:
    """Mean over facts of the attention from the last position to the forbidden word.

    Args:
        prompts: Rows with ``fact_id``, ``kind``, ``prompt``, ``forbidden_word``.

    Returns:
        A table with ``layer``, ``head`` and ``attn_forbidden_{kind}`` for each kind present.
    """
    n_layers, n_heads, _ = model_shape(model)
    specials = encoding_flag(prompts)
    result = {}
    for kind, part in prompts.groupby("kind", sort=True):
        total = torch.zeros(n_layers, n_heads)
        texts, words = list(part["prompt"]), list(part["forbidden_word"])
        for sl in tqdm(
            list(chunks(len(texts), batch_size)), desc=f"attention ({kind})", disable=not progress
        ):
            spans = forbidden_spans(tokenizer, texts[sl], words[sl], specials)
            attn, pad = last_position_attention(model, tokenizer, texts[sl], specials)
            for row, span in enumerate(spans):
                idx = torch.tensor(span) + int(pad[row])
                total += attn[row][:, :, idx].sum(-1)
        result[f"attn_forbidden_{kind}"] = (total / len(texts)).reshape(-1).numpy()
    grid = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers), n_heads),
            "head": np.tile(np.arange(n_heads), n_layers),
        }
    )
    for key, values in result.items():
        grid[key] = values
    return grid


def head_table(ov: np.ndarray, attention: pd.DataFrame, components: pd.DataFrame) -> pd.DataFrame:
    """One row per head: component, layer, head, rank, ov_score, attn_forbidden_*."""
    n_layers, n_heads = ov.shape
    table = attention.copy()
    table.insert(
        0,
        "component",
        [f"L{layer}H{h}ATN" for layer, h in zip(table["layer"], table["head"], strict=True)],
    )
    table["ov_score"] = ov.reshape(-1)
    ranks = components.set_index("component")["rank"]
    table["rank"] = table["component"].map(ranks).astype("Int64")
    means = components.set_index("component")["mean_log10"]
    table["mean_log10"] = table["component"].map(means)
    return (
        table[[c for c in HEAD_COLUMNS if c in table.columns]]
        .sort_values("rank")
        .reset_index(drop=True)
    )


def attention_example(
    model, tokenizer, prompts: pd.DataFrame, fact_id: str, heads: list[str]
) -> dict:
    """Attention of `heads` from the last position over the c and nc1 prompts of one fact."""
    from .components import parse_label

    out: dict = {"fact_id": fact_id, "heads": heads}
    specials = encoding_flag(prompts)
    for kind in ("c", "nc1"):
        row = prompts[(prompts["fact_id"] == fact_id) & (prompts["kind"] == kind)].iloc[0]
        attn, _ = last_position_attention(model, tokenizer, [row["prompt"]], specials)
        ids = tokenizer(row["prompt"], add_special_tokens=specials)["input_ids"]
        out[f"tokens_{kind}"] = tokenizer.convert_ids_to_tokens(ids)
        picks = [parse_label(h) for h in heads]
        out[f"attn_{kind}"] = (
            np.stack([attn[0, layer, head].numpy() for _, layer, head in picks])
            if picks
            else np.zeros((0, len(ids)))
        )
    return out
