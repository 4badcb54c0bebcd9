"""Normalisation layers and the final-logit soft-cap as pure functions of tensors.

Every family's norms (RMSNorm, Gemma's 1 + w RMSNorm, LayerNorm) become a `Norm`, data
that the decomposition, the patching and the OV circuit apply without the model's
modules; the adapters (`forbidden_facts.architectures`) build them from a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: config checks import the adapters without it
    from jaxtyping import Float
    from torch import Tensor


def rms_scale(x: Float[Tensor, "*rows d_model"], eps: float) -> Float[Tensor, "*rows"]:
    """1 / rms of each row, as an RMSNorm computes it: ``rsqrt(mean(x^2) + eps)``.

    The one RMSNorm formula of the package: `Norm` (every family's norms), the final
    norm's `forbidden_facts.decompose.inv_rms` and the OV circuit use it.
    """
    import torch

    return torch.rsqrt(x.pow(2).mean(-1) + eps)


@dataclass(frozen=True)
class Norm:
    """A normalisation layer as data: ``rms`` (x * gain / rms(x)) or ``layer`` (LayerNorm).

    ``gain`` is the effective multiplier (Gemma's RMSNorm stores w and multiplies by
    1 + w; here gain = 1 + w), float32.
    """

    kind: str
    gain: Float[Tensor, " d_model"]
    bias: Float[Tensor, " d_model"] | None
    eps: float

    def scale(self, x: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows 1"]:
        """1 / rms (or 1 / std for LayerNorm) of each row, float32."""
        x = x.float()
        if self.kind == "layer":
            x = x - x.mean(-1, keepdim=True)
        return rms_scale(x, self.eps).unsqueeze(-1)

    def __call__(self, x: Float[Tensor, "*rows d_model"]) -> Float[Tensor, "*rows d_model"]:
        """The norm applied to rows, in float32 (a pure function of x and the weights)."""
        x = x.float()
        centred = x - x.mean(-1, keepdim=True) if self.kind == "layer" else x
        out = centred * self.scale(x) * self.gain.to(x.device)
        return out if self.bias is None else out + self.bias.to(x.device)


def softcap(logits: Tensor, cap: float | None) -> Tensor:
    """Gemma-2's final-logit soft-cap, cap * tanh(logits / cap), in the order the model uses."""
    if cap is None:
        return logits
    import torch

    return torch.tanh(logits / cap) * cap
