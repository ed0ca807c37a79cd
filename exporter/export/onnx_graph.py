"""Read an ONNX graph: the compute nodes matched to the Keras layers, their outputs on frames, their weights,
and the nodes a float scope means. Host side (onnx, ONNX Runtime).
"""

from __future__ import annotations

import numpy as np

from exporter.errors import UserError
from exporter.export.layers import KerasLayer, check_shapes

COMPUTE_OPS = {"Conv": "conv", "ConvTranspose": "transposed conv", "MaxPool": "pool", "Concat": "concat"}
FUSED = ("BatchNormalization", "Relu", "Clip")  # Keras' batch norm, ReLU and ReLU6 after a convolution


def compute_nodes(proto) -> list[dict]:
    """Compute nodes of an ONNX graph in order, each with the float tensor that holds its layer's output (past
    a following Relu and, in a QDQ model, past the QuantizeLinear → DequantizeLinear pair), its weight, and
    whether it computes in int8 (``is_quantized``)."""
    consumers: dict[str, list] = {}
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes = []
    for node in proto.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        tensor, names = node.output[0], [node.name]
        while True:  # past the batch norm and activation fused into it, and any Q/DQ pair after each
            following = consumers.get(tensor, [])
            if len(following) != 1 or following[0].op_type not in FUSED + ("QuantizeLinear", "DequantizeLinear"):
                break
            tensor = following[0].output[0]
            if following[0].op_type in FUSED:
                names.append(following[0].name)
        weight = node.input[1] if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 else None
        quantized = (producers.get(weight) == "DequantizeLinear" if weight
                     else tensor.endswith("DequantizeLinear_Output"))
        nodes.append({"op": node.op_type, "name": node.name, "nodes": names, "tensor": tensor, "weight": weight,
                      "quantized": quantized})
    return nodes


def layer_outputs(proto, nodes: list[dict], images: np.ndarray) -> list[np.ndarray]:
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


def match(layers: list[KerasLayer], proto, images: np.ndarray, what: str = "the .onnx") -> list[dict]:
    """The compute nodes, one per Keras compute layer (UserError when they do not line up)."""
    nodes = compute_nodes(proto)
    outputs = layer_outputs(proto, nodes, images[:1])
    check_shapes(layers, [o.shape[1:] for o in outputs], what)
    return nodes


PASS_ON = ("MaxPool", "Concat", "Transpose", "Reshape", "Identity")  # nodes that hand a tensor's values on


def aligned_nodes(layers: list[KerasLayer], proto, what: str) -> list[dict]:
    """The compute nodes, one per Keras compute layer by graph order (UserError naming ``what`` when their
    counts differ)."""
    nodes = compute_nodes(proto)
    if len(nodes) != len(layers):
        raise UserError(f"{what}: the ONNX graph's {len(nodes)} compute nodes do not line up with the "
                        f"Keras model's {len(layers)} layers")
    return nodes


def _consumers(proto) -> dict[str, list]:
    """Tensor name → the nodes reading it."""
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def island_tensors(layers: list[KerasLayer], proto, named: set[int]) -> list[str]:
    """The tensors an int16 island of each layer at ``named`` spans: the layer's output (past its activation) and
    the outputs of the nodes passing it on unchanged (pooling, concatenation, layout), whose readers then read
    16 bits."""
    nodes = aligned_nodes(layers, proto, "int16 layers")
    consumers = _consumers(proto)
    found: list[str] = []
    todo = [nodes[i]["tensor"] for i in sorted(named)]
    while todo:
        tensor = todo.pop()
        if tensor in found:
            continue
        found.append(tensor)
        todo += [node.output[0] for node in consumers.get(tensor, []) if node.op_type in PASS_ON]
    return found


def float_nodes(layers: list[KerasLayer], proto, named: set[int], head: bool) -> list[str]:
    """Node names to leave out of quantization: the compute layers at ``named`` positions (each conv with its
    batch norm and activation, matched by graph order), and with ``head`` the last Conv and every node after it."""
    names = []
    if named:
        nodes = aligned_nodes(layers, proto, "float layers")
        names += [name for i in sorted(named) for name in nodes[i]["nodes"]]
    if head:
        names += _downstream(proto, [n for n in proto.graph.node if n.op_type == "Conv"][-1])
    return names


def _downstream(proto, start) -> list[str]:
    """``start`` and every node that reads what it computes, directly or not."""
    consumers = _consumers(proto)
    found, frontier = {start.name: start}, [start]
    while frontier:
        node = frontier.pop()
        for out in node.output:
            for reader in consumers.get(out, []):
                if reader.name not in found:
                    found[reader.name] = reader
                    frontier.append(reader)
    return list(found)


def _dequantized(name: str, init: dict, producer: dict) -> np.ndarray | None:
    """An initializer's value, or the float value a DequantizeLinear of initializers gives (else None)."""
    if name in init:
        return init[name].astype(np.float32)
    dq = producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q, scale = init.get(dq.input[0]), init.get(dq.input[1])
    zero = init.get(dq.input[2]) if len(dq.input) > 2 else None
    if q is None or scale is None:
        return None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    shape = [1] * q.ndim
    if scale.ndim:
        shape[axis] = -1
    zero = np.zeros_like(scale) if zero is None else zero
    return (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape).astype(np.float32)


def weights(proto, nodes: list[dict]) -> list[np.ndarray | None]:
    """Each conv node's weight, dequantized where it is stored quantized, as Keras lays it out (H×W×I×O; a
    ConvTranspose's I×O×H×W becomes Keras' H×W×O×I by the same transpose)."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {out: node for node in proto.graph.node for out in node.output}
    found: list[np.ndarray | None] = []
    for node in nodes:
        value = _dequantized(node["weight"], init, producer) if node["weight"] else None
        found.append(value.transpose(2, 3, 1, 0) if value is not None and value.ndim == 4 else None)
    return found


def is_quantized(node: dict) -> bool:
    """Whether a compute node computes in int8: a convolution whose weights are dequantized int8 (QDQ), or a
    pooling or concatenation whose output passes through a QuantizeLinear → DequantizeLinear pair. (A float
    convolution's output can still be quantized: for the int8 layer that reads it.)"""
    return node["quantized"]
