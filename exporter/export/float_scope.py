"""Resolve a ``FloatScope`` (what an int8 export keeps float, named format-neutrally) to the positions of the
Keras model's compute layers; each format backend maps those positions to its own tensors or nodes.

Host side (Keras).
"""

from __future__ import annotations

from exporter.contracts.export_spec import FloatScope
from exporter.errors import UserError
from exporter.export.layers import KerasLayer


def head_position(layers: list[KerasLayer]) -> int:
    """The classifier head: the last convolution."""
    convs = [layer.index for layer in layers if layer.kind == "conv"]
    if not convs:
        raise UserError("--float-head: the model has no convolution to keep in float")
    return max(convs)


def positions(layers: list[KerasLayer], scope: FloatScope) -> set[int]:
    """The compute-layer positions ``scope`` keeps float (UserError naming a layer that is not a convolution)."""
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in scope.layers if name not in by_name or by_name[name].kind != "conv"]
    if unknown:
        convs = [layer.name for layer in layers if layer.kind == "conv"]
        raise UserError(f"float layers: {', '.join(unknown)} not a convolution of the model "
                        f"(one of {', '.join(convs[:6])}, ...)")
    chosen = {by_name[name].index for name in scope.layers}
    if scope.head:
        chosen.add(head_position(layers))
    return chosen
