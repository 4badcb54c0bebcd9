"""From logits to the paper's metric: p_correct, log-odds and Bayes factors.

``p_correct`` is the next-token mass on every vocabulary entry whose decoded
string, stripped of whitespace and lower-cased, equals the answer stripped and
lower-cased (so "California" and SentencePiece's "▁California" count, and so do
a byte-level BPE's "Paris" and "ĠParis", decoded " Paris"). Log-odds are
computed straight from the logits,
``lo = logsumexp(z[answer]) - logsumexp(z[rest])``, which stays finite even where
p rounds to 0 or 1 in floating point: in float64 (``answer_logodds``, the
reference) or, for the millions of patched rows of attribution, in float32 on
the gathered answer ids (``gathered_logodds``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .units import LN10, to_log10  # noqa: F401 (re-exported)


def normalise(text: str) -> str:
    """The form in which a decoded token and an answer are compared: stripped, lower-cased."""
    return text.strip().lower()


class VocabIndex:
    """Map normalised decoded strings to the token ids that decode to them.

    Each id is decoded alone without cleaning up spaces, then stripped of
    whitespace and lower-cased: a token counts as the answer when that string
    equals the answer stripped and lower-cased. So SentencePiece's "▁California"
    (which decodes to "California") and "California" share a key, and so do a
    byte-level BPE's "ĠParis" (decoded " Paris"), "Paris" and " paris". Tokens that
    decode to nothing or to whitespace only are never an answer.
    """

    def __init__(self, tokenizer) -> None:
        size = len(tokenizer)
        self.d_vocab = size
        self.strings: list[str] = [
            tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in range(size)
        ]
        self._ids: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.strings):
            key = normalise(s)
            if key:
                self._ids[key].append(i)

    def answer_ids(self, answer: str) -> list[int]:
        """All token ids whose decoded string equals `answer`, ignoring case and whitespace."""
        key = normalise(answer)
        return list(self._ids.get(key, [])) if key else []

    def answer_mask(self, answers: Sequence[str], d_vocab: int) -> Bool[Tensor, "batch d_vocab"]:
        """Boolean mask of the answer ids of each answer, one row per answer."""
        mask = torch.zeros(len(answers), d_vocab, dtype=torch.bool)
        for row, answer in enumerate(answers):
            ids = self.answer_ids(answer)
            if not ids:
                raise ValueError(f"no vocabulary entry decodes to the answer {answer!r}")
            mask[row, ids] = True
        return mask


def _answer_logodds_exact(z: Tensor, mask: Tensor) -> Tensor:
    neg_inf = torch.tensor(-math.inf, dtype=z.dtype, device=z.device)
    inside = torch.logsumexp(torch.where(mask, z, neg_inf), dim=-1)
    outside = torch.logsumexp(torch.where(mask, neg_inf, z), dim=-1)
    return inside - outside


def answer_logodds(
    logits: Float[Tensor, "batch d_vocab"], mask: Bool[Tensor, "batch d_vocab"]
) -> Float[Tensor, " batch"]:
    """Natural log-odds of the answer mass, computed in float64 from logits.

    One exponential pass: the mass outside the answer is the total minus the
    answer's. Where that difference would lose digits (the answer holds all but
    1e-6 of the mass, or underflows to zero) the row is recomputed with two
    masked log-sum-exps; elsewhere the subtraction costs at most ~1e-10 in log-odds.
    """
    z = logits.to(torch.float64)
    mask = mask.to(z.device)
    e = torch.exp(z - z.amax(dim=-1, keepdim=True))
    total = e.sum(dim=-1)
    # The answer's few entries, summed by index: no pass over the row for them.
    row, col = mask.nonzero(as_tuple=True)
    inside = torch.zeros_like(total).index_add_(0, row, e[row, col])
    outside = total - inside
    lo = torch.log(inside) - torch.log(outside)
    redo = (outside < 1e-6 * total) | (inside <= 0)
    if redo.any():
        lo[redo] = _answer_logodds_exact(z[redo], mask[redo])
    return lo


def answer_index(
    mask: Bool[Tensor, "batch d_vocab"],
) -> tuple[Int[Tensor, "batch n_ids"], Bool[Tensor, "batch n_ids"]]:
    """The answer ids of each row of `mask`, padded to the longest row.

    Returns:
        (ids, valid): padding repeats the row's first id and is marked invalid.
    """
    rows = [torch.nonzero(m).flatten() for m in mask]
    if any(len(r) == 0 for r in rows):
        raise ValueError("an answer mask row has no answer id")
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([r, r[:1].expand(width - len(r))]) for r in rows])
    valid = torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
    return ids, valid


def gathered_logodds(
    logits: Float[Tensor, "batch d_vocab"],
    ids: Int[Tensor, "batch n_ids"],
    valid: Bool[Tensor, "batch n_ids"],
    inv_scale: Float[Tensor, " batch"] | None = None,
) -> Float[Tensor, " batch"]:
    """Natural log-odds of the answer mass in float32, overwriting `logits`.

    The answer's logits are gathered (a few ids per row) and their log-sum-exp
    taken; they are then set to -inf in place so that one stable log-sum-exp over
    the row gives the mass outside the answer directly. Neither term is a
    difference of two sums, so nothing cancels where the answer holds almost all
    or almost none of the mass: each log-sum-exp of positive terms is accurate to
    a few float32 ulps (~1e-6 in log-odds on a 49152-token vocabulary), and no row
    needs a float64 recomputation. No temporary as large as `logits` is made.

    Args:
        logits: Unembedded rows (float32); destroyed.
        ids: The answer ids of each row (see `answer_index`).
        valid: Which entries of `ids` are real (False for padding).
        inv_scale: Optional positive factor per row that the logits must still be
            multiplied by (the final RMSNorm's 1/rms); applied inside the
            exponential, which saves a pass over the row.

    Returns:
        lo = logsumexp(z[answer]) - logsumexp(z[rest]) per row, float32.
    """
    if inv_scale is None:
        scale = torch.ones(len(logits), 1, dtype=logits.dtype, device=logits.device)
    else:
        scale = inv_scale[:, None].to(logits.device, logits.dtype)
    ids = ids.to(logits.device)
    answer = (logits.gather(1, ids) * scale).masked_fill(~valid.to(logits.device), -math.inf)
    lse_in = torch.logsumexp(answer, dim=-1)
    logits.scatter_(1, ids, -math.inf)
    # A positive scale commutes with the max: lse(s z) = s m + log sum exp(s z - s m),
    # and s z - s m is one fused pass (addcmul) written over the logits.
    shift = logits.amax(dim=-1, keepdim=True) * scale
    torch.addcmul(-shift, logits, scale, out=logits)
    lse_out = shift[:, 0] + logits.exp_().sum(dim=-1).log()
    return lse_in - lse_out


def answer_prob(
    logits: Float[Tensor, "batch d_vocab"], mask: Bool[Tensor, "batch d_vocab"]
) -> Float[Tensor, " batch"]:
    """Probability mass on the answer ids, softmax in float64."""
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    return (probs * mask.to(probs.device)).sum(-1)


def logodds(p: np.ndarray | float) -> np.ndarray:
    """Natural log-odds log(p) - log(1 - p)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)
