"""The paper's component labels: ``EMBED``, ``L{l}H{h}ATN``, ``L{l}MLP``.

Pure string functions, kept apart from `decompose` so that steps which only read
results (tables, figures) never import torch.
"""

from __future__ import annotations


def component_labels(n_layers: int, n_heads: int) -> list[str]:
    """Labels in residual order: EMBED, then per layer its heads and its MLP.

    Example:
        >>> component_labels(1, 2)
        ['EMBED', 'L0H0ATN', 'L0H1ATN', 'L0MLP']
    """
    labels = ["EMBED"]
    for layer in range(n_layers):
        labels += [f"L{layer}H{h}ATN" for h in range(n_heads)]
        labels.append(f"L{layer}MLP")
    return labels


def parse_label(label: str) -> tuple[str, int | None, int | None]:
    """(type, layer, head) of a label: ("embed"|"head"|"mlp", layer or None, head or None)."""
    if label == "EMBED":
        return "embed", None, None
    if label.endswith("MLP"):
        return "mlp", int(label[1:-3]), None
    layer, head = label[1:-3].split("H")
    return "head", int(layer), int(head)
