"""Preflight checks of a model's adapter: run them before a long job on a new model.

`forbidden-facts check-model PATH` runs, on a few facts' prompts:

* ``components_sum``: the components rebuild the final residual (relative error);
* ``logits_rebuilt``: final norm + unembedding of that sum give the model's logits;
* ``patch_all``: patching every component of the c prompt into the nc1 prompt gives
  the c prompt's logits (first-order patching is exact when nothing is left out);
* ``single_deltas``: single-component nc->c deltas of the attribution's fast path equal
  a brute-force recomputation through the model's own modules: each component's write
  is measured by zero-ablating it at its hook point inside the forward pass (a head's
  slice of o_proj's input, read through o_proj itself, times the unpatched prompt's
  post-attention norm where the family has one), the nc1 prompt's final-norm input is
  shifted by write(c) - write(nc1), and the model finishes its own forward pass (its
  final norm, unembedding and soft-cap).

The target token is the c prompt's top-1 token, so any tokenizer works.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .architectures import adapter_for
from .components import parse_label
from .decompose import RESID_RTOL, decompose, norm_unembed
from .metrics import answer_index
from .modeling import encode, input_device
from .unembedding import base_logodds, patched_logodds

# Largest allowed |delta - brute force| in natural log-odds, by dtype.
DELTA_ATOL = {torch.float32: 1e-4, torch.bfloat16: 1e-1, torch.float16: 5e-2}


@dataclass
class CheckResult:
    """One check: its name, the worst error found, the tolerance, and whether it passed."""

    name: str
    error: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)

    def line(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{status} {self.name:<15} error {self.error:.2e}  tolerance {self.tolerance:.0e}{extra}"


def sample_components(labels: list[str], n: int) -> list[str]:
    """A spread of components to brute-force: EMBED, first and last layer's parts, ATBs."""
    layers = sorted({parse_label(lbl)[1] for lbl in labels if lbl != "EMBED"})
    first, last = layers[0], layers[-1]
    picks = ["EMBED"]
    for layer in dict.fromkeys([first, last]):
        mine = [lbl for lbl in labels if lbl != "EMBED" and parse_label(lbl)[1] == layer]
        heads = [lbl for lbl in mine if parse_label(lbl)[0] == "head"]
        picks += [heads[0], heads[-1]] + [lbl for lbl in mine if parse_label(lbl)[0] != "head"]
    middle = [lbl for lbl in labels if lbl not in picks]
    step = max(1, len(middle) // max(1, n - len(picks)))
    picks += middle[::step][: max(0, n - len(picks))]
    return list(dict.fromkeys(picks))


def _writes(model, input_ids: torch.Tensor, labels: list[str]) -> dict[str, torch.Tensor]:
    """Each label's write into the last position's residual, by zero-ablation at its hook."""
    ad = adapter_for(model)
    wanted: dict[int, list[int | str]] = {}
    for label in labels:
        kind, layer, head = parse_label(label)
        if kind == "head":
            wanted.setdefault(layer, []).append(head)
        elif kind == "attn_bias":
            wanted.setdefault(layer, []).append("bias")
    store: dict = {}
    busy = {"on": False}
    handles = []

    def embed_hook(_m, _i, out):
        store["EMBED"] = out[0, -1].detach().clone()

    def o_hook(layer):
        def hook(mod, args, out):
            if busy["on"]:
                return
            busy["on"] = True
            try:
                z = args[0][:, -1:].detach()
                full = out[0, -1].detach()
                for what in wanted.get(layer, []):
                    ablated = torch.zeros_like(z)
                    if what != "bias":
                        # Every head but this one stays: the drop is the head's write.
                        ablated = z.clone()
                        sl = slice(what * ad.d_head, (what + 1) * ad.d_head)
                        ablated[..., sl] = 0
                        store[(layer, what)] = full - mod(ablated)[0, -1]
                    else:
                        store[(layer, what)] = mod(ablated)[0, -1]
            finally:
                busy["on"] = False

        return hook

    def keep(key, pre=False):
        if pre:
            return lambda _m, args: store.__setitem__(key, args[0][0, -1].detach().clone())
        return lambda _m, _i, out: store.__setitem__(key, out[0, -1].detach().clone())

    try:
        handles.append(ad.embedding.register_forward_hook(embed_hook))
        for i in range(ad.n_layers):
            handles.append(ad.o_proj(i).register_forward_hook(o_hook(i)))
            post = ad.attn_post_norm_module(i)
            if post is not None:
                handles.append(post.register_forward_pre_hook(keep(("post_in", i), pre=True)))
                handles.append(post.register_forward_hook(keep(("post_out", i))))
            handles.append(ad.mlp_out_module(i).register_forward_hook(keep(f"L{i}MLP")))
        with torch.no_grad():
            model(input_ids=input_ids.to(input_device(model)), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for label in labels:
        kind, layer, head = parse_label(label)
        if kind in ("embed", "mlp"):
            out[label] = store[label].double()
            continue
        write = store[(layer, head if kind == "head" else "bias")].double()
        if ("post_in", layer) in store:
            # The unpatched prompt's post-attention norm, elementwise (output / input).
            write = write * store[("post_out", layer)].double() / store[("post_in", layer)].double()
        out[label] = write
    return out


def _shifted_logits(model, input_ids: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The model's own logits with `shift` added to the last position's final-norm input."""
    ad = adapter_for(model)

    def patch(_m, args):
        x = args[0].clone()
        x[:, -1] += shift.to(x.device, x.dtype)
        return (x,)

    handle = ad.final_norm_module.register_forward_pre_hook(patch)
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids.to(input_device(model)), use_cache=False)
    finally:
        handle.remove()
    return out.logits[:, -1].float()


@torch.no_grad()
def run_checks(
    model, tokenizer, prompts: pd.DataFrame, n_components: int = 10
) -> list[CheckResult]:
    """The four preflight checks on the c and nc1 prompts of `prompts` (see the module doc)."""
    ad = adapter_for(model)
    dtype = ad.final_norm_module.weight.dtype
    rtol = RESID_RTOL.get(dtype, 1e-2)
    specials = bool(prompts["add_special_tokens"].iloc[0])
    c_rows = prompts[prompts.kind == "c"].reset_index(drop=True)
    nc_rows = prompts[prompts.kind == "nc1"].reset_index(drop=True)
    with torch.no_grad():
        c = decompose(model, encode(tokenizer, list(c_rows.prompt), specials), check=False)
        nc = decompose(model, encode(tokenizer, list(nc_rows.prompt), specials), check=False)
    results = []
    worst_sum, worst_logit = 0.0, 0.0
    for dec in (c, nc):
        rebuilt = dec.components.sum(1)
        err = (rebuilt - dec.resid).norm(dim=-1) / dec.resid.norm(dim=-1).clamp_min(1e-12)
        scale = dec.logits.abs().amax(-1).clamp_min(1.0)
        lerr = (norm_unembed(model, rebuilt) - dec.logits).abs().amax(-1) / scale
        worst_sum = max(worst_sum, float(err.max()))
        worst_logit = max(worst_logit, float(lerr.max()))
    n = len(c_rows)
    results.append(CheckResult("components_sum", worst_sum, rtol, f"{2 * n} prompts, relative"))
    results.append(CheckResult("logits_rebuilt", worst_logit, 10 * rtol, "relative to max |logit|"))
    with torch.no_grad():
        patched = norm_unembed(model, nc.resid + (c.components - nc.components).sum(1))
    scale = c.logits.abs().amax(-1).clamp_min(1.0)
    perr = float(((patched - c.logits).abs().amax(-1) / scale).max())
    results.append(CheckResult("patch_all", perr, 10 * rtol, "nc1 -> c, relative"))

    labels = sample_components(c.labels, n_components)
    index = [c.labels.index(lbl) for lbl in labels]
    target = c.logits.argmax(-1)
    mask = torch.zeros_like(c.logits, dtype=torch.bool)
    mask[torch.arange(n), target] = True
    ids, valid = answer_index(mask)
    with torch.no_grad():
        base = base_logodds(model, nc.resid, ids, valid)
        fast, _ = patched_logodds(
            model, nc.resid, (c.components - nc.components)[:, index], ids, valid, row_batch=4096
        )
    fast = (fast - base[:, None]).double()
    worst, where = 0.0, ""
    for row in range(n):
        enc_c = tokenizer(c_rows.prompt[row], return_tensors="pt", add_special_tokens=specials)
        enc_nc = tokenizer(nc_rows.prompt[row], return_tensors="pt", add_special_tokens=specials)
        w_c = _writes(model, enc_c["input_ids"], labels)
        w_nc = _writes(model, enc_nc["input_ids"], labels)
        zero = torch.zeros(ad.d_model, dtype=torch.float64)
        lo0 = _logodds(_shifted_logits(model, enc_nc["input_ids"], zero), int(target[row]))
        for k, label in enumerate(labels):
            logits = _shifted_logits(model, enc_nc["input_ids"], w_c[label] - w_nc[label])
            err = abs(_logodds(logits, int(target[row])) - lo0 - float(fast[row, k]))
            if err > worst:
                worst, where = err, f"worst {label} on {c_rows.fact_id[row]}"
    tol = DELTA_ATOL.get(dtype, 1e-1)
    detail = f"{len(labels)} components x {n} facts, log-odds; {where}".rstrip("; ")
    results.append(CheckResult("single_deltas", worst, tol, detail))
    return results


def _logodds(logits: torch.Tensor, token: int) -> float:
    logp = torch.log_softmax(logits[0].double(), -1)[token]
    return float(logp - torch.log1p(-logp.exp()))
