"""Resolve a ``FloatScope`` (what an int8 export keeps float, named format-neutrally) to the positions of the
Keras model's compute layers; each format backend maps those positions to its own tensors or nodes.

Host side (Keras).
"""

from __future__ import annotations

from exporter.contracts.export_spec import FloatScope
from exporter.errors import UserError
from exporter.export.layers import KerasLayer


def named_positions(layers: list[KerasLayer], scope: FloatScope, what: str = "float layers") -> set[int]:
    """The compute-layer positions of the layers ``scope`` names (UserError naming one that is not a
    convolution); the head is resolved by each format from its own graph (its last convolution)."""
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in scope.layers if name not in by_name or by_name[name].kind != "conv"]
    if unknown:
        convs = [layer.name for layer in layers if layer.kind == "conv"]
        raise UserError(f"{what}: {', '.join(unknown)} not a convolution of the model "
                        f"(one of {', '.join(convs[:6])}, ...)")
    if scope.head and not any(layer.kind == "conv" for layer in layers):
        raise UserError("--float-head: the model has no convolution to keep in float")
    return {by_name[name].index for name in scope.layers}
