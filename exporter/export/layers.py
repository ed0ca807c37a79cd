"""The model's compute layers, matched across Keras, TFLite and ONNX by their order in the graph.

Converters rename tensors (``unet_1/conv2d_3_1/Relu;…`` in TFLite, tf2onnx's scopes in ONNX) but keep the
layers' topological order, and the seed U-Net is one chain with skips: the n-th convolution, transposed
convolution, pooling or concatenation of a file is the n-th such layer of the Keras model. Each match is
checked by the output shape (H×W×C), so a graph that does not line up is an error, not a silent mismatch.

Host side (Keras, ONNX, LiteRT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.errors import UserError

TFLITE_OPS = {"CONV_2D": "conv", "TRANSPOSE_CONV": "transposed conv", "MAX_POOL_2D": "pool",
              "CONCATENATION": "concat"}
ONNX_OPS = {"Conv": "conv", "ConvTranspose": "transposed conv", "MaxPool": "pool", "Concat": "concat"}


@dataclass(frozen=True)
class KerasLayer:
    """One compute layer of the Keras model, in graph order."""

    index: int
    name: str
    kind: str                      # conv, transposed conv, pool, concat
    shape: tuple[int, int, int]    # output H, W, C
    flops: int                     # 2 × multiply-adds per frame (0 for pool and concat)
    stage: str                     # encoder, bottleneck, decoder, head


def keras_layers(model) -> list[KerasLayer]:
    """The compute layers of ``model`` in graph order, with their arithmetic and their place along the U."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            kind = "transposed conv"
            _, h, w, c_in = layer.input.shape
            kh, kw = layer.kernel_size
            flops = 2 * h * w * kh * kw * c_in * layer.filters  # each input pixel scatters one kernel
        elif isinstance(layer, keras.layers.Conv2D):
            kind = "conv"
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops = 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, keras.layers.MaxPooling2D):
            kind, flops = "pool", 0
        elif isinstance(layer, keras.layers.Concatenate):
            kind, flops = "concat", 0
        else:
            continue
        found.append((layer.name, kind, tuple(int(v) for v in layer.output.shape[1:]), int(flops)))
    if not found:
        raise UserError("the model has no convolution, pooling or concatenation layer to report on")
    kinds = [kind for _, kind, _, _ in found]
    first_up = kinds.index("transposed conv") if "transposed conv" in kinds else len(kinds)
    last_pool = max((i for i, k in enumerate(kinds[:first_up]) if k == "pool"), default=-1)
    head = max(i for i, k in enumerate(kinds) if k == "conv")
    layers = []
    for i, (name, kind, shape, flops) in enumerate(found):
        stage = ("head" if i == head else "encoder" if i <= last_pool else "bottleneck" if i < first_up
                 else "decoder")
        layers.append(KerasLayer(i, name, kind, shape, flops, stage))
    return layers


def keras_outputs(model, layers: list[KerasLayer], images: np.ndarray) -> list[np.ndarray]:
    """Each compute layer's float output on ``images`` (N×H×W×C per layer)."""
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(layer.name).output for layer in layers])
    outputs = probe.predict(images, batch_size=8, verbose=0)
    return [np.asarray(o, np.float32) for o in (outputs if isinstance(outputs, list) else [outputs])]


def _check_shapes(layers: list[KerasLayer], shapes: list[tuple[int, ...]], what: str) -> None:
    if len(shapes) != len(layers) or any(tuple(s) != layer.shape for s, layer in zip(shapes, layers, strict=False)):
        raise UserError(f"{what}: its {len(shapes)} compute ops do not line up with the Keras model's "
                        f"{len(layers)} layers (shapes {shapes[:3]}… vs {[layer.shape for layer in layers[:3]]}…)")


# -- TFLite ----------------------------------------------------------------------------------------------------
def tflite_ops(model_bytes: bytes) -> list[dict]:
    """Compute ops of a .tflite in execution order: op name, output tensor index/name/dtype/shape, filter index."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    tensor = interpreter._get_tensor_details
    ops = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in TFLITE_OPS:
            continue
        out = tensor(op["outputs"][0], 0)
        filter_index = int(op["inputs"][1]) if op["op_name"] in ("CONV_2D", "TRANSPOSE_CONV") else None
        ops.append({"op": op["op_name"], "tensor": out["name"], "index": int(out["index"]),
                    "dtype": out["dtype"].__name__, "shape": tuple(int(v) for v in out["shape"][1:]),
                    "filter": filter_index})
    return ops


def match_tflite(layers: list[KerasLayer], model_bytes: bytes, what: str = "the .tflite") -> list[dict]:
    ops = tflite_ops(model_bytes)
    _check_shapes(layers, [op["shape"] for op in ops], what)
    return ops


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


def tflite_outputs(model_bytes: bytes, ops: list[dict], images: np.ndarray) -> list[np.ndarray]:
    """Each compute op's output on ``images``, dequantized (no delegate, so every tensor is kept)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    details = {op["index"]: interpreter._get_tensor_details(op["index"], 0) for op in ops}
    collected: list[list[np.ndarray]] = [[] for _ in ops]
    for frame in images:
        x = frame[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        for i, op in enumerate(ops):
            collected[i].append(_dequantize(interpreter.get_tensor(op["index"]), details[op["index"]])[0])
    return [np.stack(values) for values in collected]


def tflite_filters(model_bytes: bytes, ops: list[dict]) -> list[np.ndarray | None]:
    """Each conv op's filter, dequantized, as Keras lays it out (H×W×in×out; transposed: H×W×out×in)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    filters: list[np.ndarray | None] = []
    for op in ops:
        if op["filter"] is None:
            filters.append(None)
            continue
        details = interpreter._get_tensor_details(op["filter"], 0)
        try:
            values = _dequantize(interpreter.get_tensor(op["filter"]), details)
        except ValueError:  # a filter computed at run time (not a constant): no weight error to give
            filters.append(None)
            continue
        # TFLite: CONV_2D O×H×W×I, TRANSPOSE_CONV O×H×W×I (O = the output channels of the transposed conv)
        filters.append(values.transpose(1, 2, 3, 0) if op["op"] == "CONV_2D" else values.transpose(1, 2, 0, 3))
    return filters


# -- ONNX ------------------------------------------------------------------------------------------------------
def onnx_nodes(proto) -> list[dict]:
    """Compute nodes of an ONNX graph in order, each with the float tensor that holds its layer's output: past
    a following Relu and, in a QDQ model, past the QuantizeLinear → DequantizeLinear pair."""
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes = []
    for node in proto.graph.node:
        if node.op_type not in ONNX_OPS:
            continue
        tensor, names = node.output[0], [node.name]
        for wanted in ("Relu", "QuantizeLinear", "DequantizeLinear"):
            following = consumers.get(tensor, [])
            if len(following) >= 1 and following[0].op_type == wanted:
                tensor = following[0].output[0]
                if wanted == "Relu":
                    names.append(following[0].name)
        weight = node.input[1] if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 else None
        nodes.append({"op": node.op_type, "name": node.name, "nodes": names, "tensor": tensor, "weight": weight})
    return nodes


def onnx_outputs(proto, nodes: list[dict], images: np.ndarray) -> list[np.ndarray]:
    """Each compute node's layer output on ``images``, NCHW turned back to NHWC."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    present = {o.name for o in probe.graph.output}
    for node in nodes:
        if node["tensor"] not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(node["tensor"], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [node["tensor"] for node in nodes]
    collected: list[list[np.ndarray]] = [[] for _ in nodes]
    input_name = session.get_inputs()[0].name
    for frame in images:
        values = session.run(names, {input_name: frame[None].astype(np.float32)})
        for i, value in enumerate(values):
            value = np.asarray(value, np.float32)
            collected[i].append(value.transpose(0, 2, 3, 1)[0] if value.ndim == 4 else value[0])
    return [np.stack(values) for values in collected]


def match_onnx(layers: list[KerasLayer], proto, images: np.ndarray, what: str = "the .onnx"):
    nodes = onnx_nodes(proto)
    outputs = onnx_outputs(proto, nodes, images[:1])
    _check_shapes(layers, [o.shape[1:] for o in outputs], what)
    return nodes


def onnx_weights(proto, nodes: list[dict]) -> list[np.ndarray | None]:
    """Each conv node's weight, dequantized where it is stored quantized, as Keras lays it out."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {out: node for node in proto.graph.node for out in node.output}
    weights: list[np.ndarray | None] = []
    for node in nodes:
        name = node["weight"]
        value = None
        if name in init:
            value = init[name].astype(np.float32)
        elif name in producer and producer[name].op_type == "DequantizeLinear":
            dq = producer[name]
            q = init.get(dq.input[0])
            scale = init.get(dq.input[1])
            zero = init.get(dq.input[2]) if len(dq.input) > 2 else None
            if q is not None and scale is not None:
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                shape = [1] * q.ndim
                if scale.ndim:
                    shape[axis] = -1
                zero = np.zeros_like(scale) if zero is None else zero
                value = (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape).astype(np.float32)
        if value is None or value.ndim != 4:
            weights.append(None)
        elif node["op"] == "Conv":  # O×I×H×W → H×W×I×O
            weights.append(value.transpose(2, 3, 1, 0))
        else:  # ConvTranspose: I×O×H×W (I = its input channels) → Keras H×W×O×I
            weights.append(value.transpose(2, 3, 1, 0))
    return weights


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(reference.astype(np.float64) - approx.astype(np.float64))))
    if noise == 0:
        return float("inf")
    return 10 * np.log10(max(signal, 1e-30) / noise)


def channel_sqnr_db(reference: np.ndarray, approx: np.ndarray, cap: float = 60.0) -> float:
    """Median over output channels (last axis) of each channel's SQNR, capped at ``cap``: one channel whose
    range dwarfs the rest carries the tensor's SQNR while every other channel drowns in its quantization step;
    this one sees it. Channels that are zero in both are left out."""
    ref = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    err = ref - approx.reshape(-1, approx.shape[-1]).astype(np.float64)
    signal, noise = np.sum(ref**2, axis=0), np.sum(err**2, axis=0)
    live = (signal > 0) | (noise > 0)
    if not live.any():
        return cap
    with np.errstate(divide="ignore"):
        per_channel = np.where(noise[live] > 0, 10 * np.log10(np.maximum(signal[live], 1e-30) / np.maximum(noise[live], 1e-300)), cap)
    return float(np.median(np.minimum(per_channel, cap)))


def relative_rmse(reference: np.ndarray, approx: np.ndarray) -> float:
    """RMS of the error over RMS of the reference."""
    rms = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    err = float(np.sqrt(np.mean(np.square(reference.astype(np.float64) - approx.astype(np.float64)))))
    return err / rms if rms > 0 else float("inf") if err > 0 else 0.0
