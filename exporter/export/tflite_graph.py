"""Read a .tflite graph: its ops in execution order (one walker), the compute ops matched to the Keras layers,
their outputs on frames (dequantized), their filters, and the tensors a float scope means.

LiteRT's Python interpreter lists ops only through private methods (``_get_ops_details``,
``_get_tensor_details``); they are used here and nowhere else. Host side (LiteRT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.errors import UserError
from exporter.export.layers import KerasLayer, check_shapes

COMPUTE_OPS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise conv", "TRANSPOSE_CONV": "transposed conv",
               "MAX_POOL_2D": "pool", "CONCATENATION": "concat"}
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")


@dataclass(frozen=True)
class Tensor:
    """One tensor of the graph, as LiteRT describes it."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Op:
    """One op of the graph: its type, output tensors, (for convolutions) the filter tensor's index, and the
    indices of its input tensors (-1: an optional input left out)."""

    op: str
    outputs: tuple[Tensor, ...]
    filter: int | None
    inputs: tuple[int, ...] = ()

    @property
    def out(self) -> Tensor:
        return self.outputs[0]


def ops(model_bytes: bytes) -> list[Op]:
    """Every op of a .tflite in execution order: the one walk over LiteRT's private op list."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)

    def tensor(index: int) -> Tensor:
        details = interpreter._get_tensor_details(index, 0)
        return Tensor(int(details["index"]), details["name"], details["dtype"].__name__,
                      tuple(int(v) for v in details["shape"]))

    found = []
    for op in interpreter._get_ops_details():
        filter_index = int(op["inputs"][1]) if op["op_name"] in WEIGHTED_OPS else None
        found.append(Op(op["op_name"], tuple(tensor(t) for t in op["outputs"]), filter_index,
                        tuple(int(t) for t in op["inputs"])))
    return found


def compute_ops(model_bytes: bytes) -> list[Op]:
    """The convolutions, transposed convolutions, poolings and concatenations, in execution order."""
    return [op for op in ops(model_bytes) if op.op in COMPUTE_OPS]


def match(layers: list[KerasLayer], model_bytes: bytes, what: str = "the .tflite") -> list[Op]:
    """The compute ops, one per Keras compute layer (UserError when they do not line up)."""
    found = compute_ops(model_bytes)
    check_shapes(layers, [op.out.shape[1:] for op in found], what)
    return found


def _head_at(every_op: list[Op]) -> int:
    """The classifier head: the last CONV_2D (no layer matching needed, so any model has one)."""
    return max(i for i, op in enumerate(every_op) if op.op == "CONV_2D")


def float_tensors(layers: list[KerasLayer], model_bytes: bytes, named: set[int], head: bool) -> list[str]:
    """Output tensors (of the float .tflite) to keep float: the compute layers at ``named`` positions (matched to
    the Keras layers by graph order), and with ``head`` the last convolution and every op after it (a softmax,
    an upsampling, an in-graph argmax)."""
    every_op = ops(model_bytes)
    tensors = []
    if named:
        matched = [op for op in every_op if op.op in COMPUTE_OPS]
        check_shapes(layers, [op.out.shape[1:] for op in matched], "the float conversion (to keep layers float)")
        tensors += [matched[i].out.name for i in sorted(named)]
    if head:
        tensors += [t.name for op in every_op[_head_at(every_op):] for t in op.outputs]
    return tensors


def _dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    """A tensor's values as float32 (per-tensor or per-channel affine int8/uint8; floats as they are)."""
    if values.dtype.kind == "f":
        return values.astype(np.float32)
    params = details.get("quantization_parameters") or {}
    scales, zero_points = np.asarray(params.get("scales", [])), np.asarray(params.get("zero_points", []))
    if scales.size == 0:
        scale, zero = details["quantization"]
        return (values.astype(np.float32) - zero) * scale
    axis = int(params.get("quantized_dimension", 0))
    shape = [1] * values.ndim
    shape[axis] = -1
    return (values.astype(np.float32) - zero_points.reshape(shape)) * scales.reshape(shape).astype(np.float32)


def layer_outputs(model_bytes: bytes, matched: list[Op], images: np.ndarray) -> list[np.ndarray]:
    """Each matched op's output on ``images``, dequantized (no delegate, so every tensor is kept)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    details = {op.out.index: interpreter._get_tensor_details(op.out.index, 0) for op in matched}
    collected: list[list[np.ndarray]] = [[] for _ in matched]
    for frame in images:
        x = frame[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        for i, op in enumerate(matched):
            collected[i].append(_dequantize(interpreter.get_tensor(op.out.index), details[op.out.index])[0])
    return [np.stack(values) for values in collected]


def filters(model_bytes: bytes, matched: list[Op]) -> list[np.ndarray | None]:
    """Each conv op's filter, dequantized, as Keras lays it out (H×W×in×out; transposed: H×W×out×in)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    found: list[np.ndarray | None] = []
    for op in matched:
        if op.filter is None:
            found.append(None)
            continue
        details = interpreter._get_tensor_details(op.filter, 0)
        try:
            values = _dequantize(interpreter.get_tensor(op.filter), details)
        except ValueError:  # a filter computed at run time (not a constant): no weight error to give
            found.append(None)
            continue
        # TFLite: CONV_2D O×H×W×I, TRANSPOSE_CONV O×H×W×I (O = the output channels of the transposed conv),
        # DEPTHWISE_CONV_2D 1×H×W×(I·multiplier) (Keras: H×W×I×multiplier; multiplier 1 as MobileNets use it)
        if op.op == "DEPTHWISE_CONV_2D":
            found.append(values[0][..., None])
        else:
            found.append(values.transpose(1, 2, 3, 0) if op.op == "CONV_2D" else values.transpose(1, 2, 0, 3))
    return found


def check_float_positions(layers: list[KerasLayer], model_bytes: bytes, named: set[int], head: bool) -> None:
    """The chosen convolutions compute in float and every other one in int8, or the file is not what it says."""
    every_op = ops(model_bytes)
    weighted = [i for i, op in enumerate(every_op) if op.op in WEIGHTED_OPS]
    wanted: set[int] = set()
    if named:
        compute_at = [i for i, op in enumerate(every_op) if op.op in COMPUTE_OPS]
        check_shapes(layers, [every_op[i].out.shape[1:] for i in compute_at], "the selectively quantized model")
        wanted = {compute_at[i] for i in named}
    if head:  # the head and every weighted op after it (float_tensors keeps them all float: an FCN's upsampling)
        head_at = _head_at(every_op)
        wanted |= {i for i in weighted if i >= head_at}
    wrong = [f"{every_op[i].op} #{n}" for n, i in enumerate(weighted)
             if (every_op[i].out.dtype == "float32") != (i in wanted)]
    if wrong:
        raise UserError(f"selective quantization did not keep exactly the chosen layers float (wrong: "
                        f"{', '.join(wrong[:4])})")


def io_types(model_bytes: bytes) -> tuple[str, str, dict]:
    """(input dtype, output kind "logits"/"class_map", input quantization) read from the flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    output = "class_map" if len(out["shape"]) == 3 or out["shape"][-1] == 1 else "logits"
    return inp["dtype"].__name__, output, {"scale": float(scale), "zero_point": int(zero_point)}


FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")


def op_table(model_bytes: bytes) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Every op of the file, in order: (type, its input tensor types, its output tensor types), read from the
    flatbuffer itself (no delegate: what a delegate would take over is listed op by op)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)

    def dtype(index: int) -> str:
        return interpreter._get_tensor_details(index, 0)["dtype"].__name__

    return [(op["op_name"], tuple(dtype(t) for t in op["inputs"] if t >= 0), tuple(dtype(t) for t in op["outputs"]))
            for op in interpreter._get_ops_details()]


def float_ops(model_bytes: bytes) -> list[str]:
    """The ops that read or write a float tensor (a float constant included), as 'TYPE (types in → types out)':
    what an integer-only accelerator rejects or hands back to the CPU. Empty for an integer-only file."""
    return [f"{op} ({', '.join(ins)} → {', '.join(outs)})" for op, ins, outs in op_table(model_bytes)
            if any(t in FLOAT_TYPES for t in ins + outs)]


def op_summary(model_bytes: bytes) -> str:
    """'CONV_2D ×20 (int8), QUANTIZE ×4 (int16→int8), …': op types with their tensor types, in first-seen order."""
    counts: dict[tuple[str, str], int] = {}
    for op, ins, outs in op_table(model_bytes):
        key = (op, "/".join(dict.fromkeys(t for t in ins if t != "int32")) + "→" + "/".join(dict.fromkeys(outs)))
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{op} ×{n} ({types})" for (op, types), n in counts.items())
