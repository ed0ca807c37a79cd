"""Int8 TFLite with int16 islands (A16W8): chosen tensors carried in int16, the rest int8, no float op.

TensorFlow's converter quantizes a whole model to int8 or to int16x8, never a mix; Google's
``ai-edge-quantizer`` takes per-op recipes (int8 activations everywhere, 16-bit activations with int8 weights
on the ops a regex names) and inserts the int8↔int16 QUANTIZE ops between them. A *tensor* is kept in int16
by configuring its producer, every op it passes through unchanged (max-pooling, concatenation, reshapes) and
the ops that finally compute on it: keeping only the producer wider would hand the consumer an int8 copy of
the same tensor, with the same damage.

Rewrites follow so that the file is what our int8 files are: the op codes' old byte-sized field set as readers
expect it; the float ARG_MAX the quantizer leaves after a DEQUANTIZE takes the integer logits directly (argmax of
a per-tensor affine map with a positive scale is the argmax of its integers); a uint8 input (camera bytes) is fed
through a QUANTIZE op to the int8 input, and int8 logits go out as uint8.

Host side (TensorFlow, ai-edge-quantizer).
"""

from __future__ import annotations

import re

from exporter.errors import UserError
from exporter.export.calibration import CalibrationSet
from exporter.parameters import IOType

PASS_THROUGH_OPS = ("MAX_POOL_2D", "CONCATENATION", "RESHAPE", "AVERAGE_POOL_2D", "RESIZE_NEAREST_NEIGHBOR")
INSTALL = "pip install ai-edge-quantizer (unet-export's [host] extra)"


def island_tensors(model_bytes: bytes, producers: list[str]) -> list[str]:
    """The output tensor names of every op an int16 island of each ``producers`` tensor spans: the producer, the
    ops it passes through unchanged, and the ops computing on it."""
    from exporter.export import tflite_graph

    every_op = tflite_graph.ops(model_bytes)
    by_name = {op.out.name: op for op in every_op}
    found: list[str] = []
    for name in producers:
        if name not in by_name:
            raise UserError(f"int16 island: no op writes tensor {name!r}")
        todo, expanded = [by_name[name]], set()  # each producer's readers are followed, even if already found
        while todo:
            op = todo.pop()
            if op.out.dtype != "float32" or op.out.index in expanded:  # an argmax's int32 is not quantized
                continue
            if op.out.name not in found:
                found.append(op.out.name)
            if op is by_name[name] or op.op in PASS_THROUGH_OPS:
                expanded.add(op.out.index)
                todo += [reader for reader in every_op if op.out.index in reader.inputs]
    return found


def _recipe(island: list[str]) -> list[dict]:
    """ai-edge-quantizer's recipe: int8 activations and per-channel int8 weights everywhere, 16-bit activations
    on the island's ops (an op's scope is its output tensor names, each followed by ';')."""
    from ai_edge_quantizer import recipe

    wide = recipe.static_wi8_ai16()[0]
    return [*recipe.static_wi8_ai8(), *[dict(wide, regex=f"^{re.escape(name)};$") for name in island]]


def quantize(float_bytes: bytes, calibration: CalibrationSet, island: list[str], io: IOType) -> bytes:
    """The float .tflite quantized by the recipe (calibrated on ``calibration``), its argmax on integers and its
    input as ``io`` says."""
    try:
        from ai_edge_quantizer import quantizer
    except ImportError:
        raise UserError(f"int16 islands need ai-edge-quantizer: {INSTALL}") from None
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=float_bytes).get_signature_list()
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    qt = quantizer.Quantizer(bytearray(float_bytes))
    qt.load_quantization_recipe(_recipe(island))
    result = qt.calibrate({key: [{input_name: sample} for sample in calibration]})
    model_bytes = bytes(qt.quantize(result, enable_progress_report=False).quantized_model)
    return _rewrite(model_bytes, io)


def _rewrite(model_bytes: bytes, io: IOType) -> bytes:
    """Op codes readable by every reader, ARG_MAX on the integer logits (its DEQUANTIZE dropped; int16 logits cast
    to int32), and with ``io`` uint8 a uint8 input (and int8 logits out as uint8) through QUANTIZE ops."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]
    placeholder = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    for code in model.operatorCodes:  # the quantizer leaves the old byte-sized field 0 (ADD) on the ops it adds:
        code.deprecatedBuiltinCode = min(code.builtinCode, placeholder)  # readers of it (OpenVINO) then see an
        # ADD without options and refuse the file
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def kind(op) -> str:
        return names.get(model.operatorCodes[op.opcodeIndex].builtinCode, "")

    def new_op(builtin: int, inputs: list[int], outputs: list[int]):
        codes = [code.builtinCode for code in model.operatorCodes]
        if builtin not in codes:
            code = schema.OperatorCodeT()
            code.builtinCode = code.deprecatedBuiltinCode = builtin
            code.version = 1
            model.operatorCodes.append(code)
            codes.append(builtin)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes.index(builtin), inputs, outputs
        return op

    def new_tensor(like, name: bytes, dtype: int) -> int:
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.shapeSignature, tensor.type = name, list(like.shape), like.shapeSignature, dtype
        tensor.buffer = 0  # the empty buffer every model has: not a constant
        graph.tensors.append(tensor)
        return len(graph.tensors) - 1

    def as_uint8(index: int, name: bytes) -> int:
        """A uint8 twin of int8 tensor ``index`` (zero point + 128, same scale): the same real values."""
        like = graph.tensors[index]
        twin = new_tensor(like, name, schema.TensorType.UINT8)
        graph.tensors[twin].quantization = schema.QuantizationParametersT()
        graph.tensors[twin].quantization.scale = list(like.quantization.scale)
        graph.tensors[twin].quantization.zeroPoint = [int(z) + 128 for z in like.quantization.zeroPoint]
        return twin

    def repoint(maps, old: int, new: int) -> None:
        for signature in model.signatureDefs or []:
            for tensor_map in getattr(signature, maps):
                if tensor_map.tensorIndex == old:
                    tensor_map.tensorIndex = new

    writers = {out: op for op in graph.operators for out in op.outputs}
    for op in list(graph.operators):
        if kind(op) != "ARG_MAX":
            continue
        source = writers.get(op.inputs[0])
        if source is not None and kind(source) == "DEQUANTIZE" and \
                sum(op.inputs[0] in other.inputs for other in graph.operators) == 1:
            op.inputs[0] = source.inputs[0]
            graph.operators.remove(source)
        logits = graph.tensors[op.inputs[0]]
        if logits.type == schema.TensorType.INT16:  # LiteRT's ARG_MAX takes int8/uint8/int32, not int16
            wide = new_tensor(logits, logits.name + b"/as_int32", schema.TensorType.INT32)
            graph.operators.insert(graph.operators.index(op), new_op(schema.BuiltinOperator.CAST, [op.inputs[0]],
                                                                     [wide]))
            op.inputs[0] = wide
    if io is IOType.UINT8:
        old = graph.inputs[0]
        if graph.tensors[old].type != schema.TensorType.INT8:
            raise UserError(f"int16 islands: the quantized input is {graph.tensors[old].type}, not int8")
        graph.inputs[0] = as_uint8(old, b"camera_bytes")
        graph.operators.insert(0, new_op(schema.BuiltinOperator.QUANTIZE, [graph.inputs[0]], [old]))
        repoint("inputs", old, graph.inputs[0])
        old = graph.outputs[0]
        if graph.tensors[old].type == schema.TensorType.INT8:  # int8 logits out as uint8, as TensorFlow writes them
            graph.outputs[0] = as_uint8(old, graph.tensors[old].name + b"/uint8")
            graph.operators.append(new_op(schema.BuiltinOperator.QUANTIZE, [old], [graph.outputs[0]]))
            repoint("outputs", old, graph.outputs[0])
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
