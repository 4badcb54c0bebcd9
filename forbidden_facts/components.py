"""The paper's component labels: ``EMBED``, ``L{l}H{h}ATN``, ``L{l}ATB``, ``L{l}MLP``.

``L{l}ATB`` is a layer's attention output bias (o_proj's bias), present only in
families that have one (forbidden_facts/architectures.py), as the paper's authors
labelled it, so that the components still sum to the residual.

Pure string functions, kept apart from `decompose` so that steps which only read
results (tables, figures) never import torch.
"""

from __future__ import annotations


def component_labels(n_layers: int, n_heads: int, attn_bias: bool = False) -> list[str]:
    """Labels in residual order: EMBED, then per layer its heads (its ATB) and its MLP.

    Example:
        >>> component_labels(1, 2)
        ['EMBED', 'L0H0ATN', 'L0H1ATN', 'L0MLP']
        >>> component_labels(1, 1, attn_bias=True)
        ['EMBED', 'L0H0ATN', 'L0ATB', 'L0MLP']
    """
    labels = ["EMBED"]
    for layer in range(n_layers):
        labels += [f"L{layer}H{h}ATN" for h in range(n_heads)]
        if attn_bias:
            labels.append(f"L{layer}ATB")
        labels.append(f"L{layer}MLP")
    return labels


def parse_label(label: str) -> tuple[str, int | None, int | None]:
    """(type, layer, head) of a label: ("embed"|"head"|"attn_bias"|"mlp", layer, head or None)."""
    if label == "EMBED":
        return "embed", None, None
    if label.endswith("MLP"):
        return "mlp", int(label[1:-3]), None
    if label.endswith("ATB"):
        return "attn_bias", int(label[1:-3]), None
    layer, head = label[1:-3].split("H")
    return "head", int(layer), int(head)
