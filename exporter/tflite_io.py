"""A .tflite file's input and output read from its flatbuffer with the standard library alone.

For the places that must know a file's I/O without a TFLite runtime in the process: the web runtimes (the page
runs the model; the quantization of its input and output is read here), and the checks that a file meant for a
GPU, a browser or an app has a fixed batch and what its output is. Only the fields needed are read: subgraph 0's
input and output tensors, their type, shape, shape signature (-1 for a dynamic dimension) and quantization.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

# TFLite's TensorType enum (schema.fbs) for the types a model's I/O has
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
                10: "float64", 15: "uint32", 16: "uint16"}


class NotTFLite(ValueError):
    """The bytes are not a TFLite flatbuffer this reader understands."""


@dataclass(frozen=True)
class TensorIO:
    """One input or output tensor: shape with -1 for a dynamic dimension (from the shape signature)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float = 0.0
    zero_point: int = 0

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and self.shape[0] < 0

    @property
    def class_map(self) -> bool:
        """An integer, unquantized N×H×W or N×H×W×1 output: an in-graph argmax (the adapters' one rule)."""
        from exporter.runtimes.base import is_class_map  # here: the runtimes package imports this module

        return is_class_map(self.shape, self.dtype, self.scale)


def _inside(buf: bytes, at: int) -> int:
    """``at`` if it is an offset inside ``buf`` (struct would read a negative one from the end)."""
    if not 0 <= at < len(buf):
        raise struct.error(f"offset {at} outside the file")
    return at


class _Table:
    """A flatbuffer table: its fields by vtable slot."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, _inside(buf, pos)
        vtable = _inside(buf, pos - struct.unpack_from("<i", buf, pos)[0])
        size = struct.unpack_from("<H", buf, vtable)[0]
        self.offsets = [struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0] for i in range((size - 4) // 2)]

    def _at(self, slot: int) -> int | None:
        off = self.offsets[slot] if slot < len(self.offsets) else 0
        return self.pos + off if off else None

    def scalar(self, slot: int, fmt: str, default=0):
        at = self._at(slot)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _target(self, slot: int) -> int | None:
        at = self._at(slot)
        return None if at is None else _inside(self.buf, at + struct.unpack_from("<I", self.buf, _inside(self.buf, at))[0])

    def table(self, slot: int) -> _Table | None:
        target = self._target(slot)
        return None if target is None else _Table(self.buf, target)

    def vector(self, slot: int, fmt: str) -> tuple:
        target = self._target(slot)
        if target is None:
            return ()
        n = struct.unpack_from("<I", self.buf, target)[0]
        return struct.unpack_from(f"<{n}{fmt}", self.buf, target + 4)

    def tables(self, slot: int) -> list[_Table]:
        target = self._target(slot)
        if target is None:
            return []
        n = struct.unpack_from("<I", self.buf, target)[0]
        return [_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])
                for at in (target + 4 + 4 * i for i in range(n))]

    def string(self, slot: int) -> str:
        target = self._target(slot)
        if target is None:
            return ""
        n = struct.unpack_from("<I", self.buf, target)[0]
        return self.buf[target + 4: target + 4 + n].decode("utf-8", "replace")


def _tensor(table: _Table) -> TensorIO:
    shape = table.vector(0, "i")
    signature = table.vector(7, "i")
    quant = table.table(4)
    scales = quant.vector(2, "f") if quant else ()
    zeros = quant.vector(3, "q") if quant else ()
    dtype = TENSOR_TYPES.get(table.scalar(1, "b"), f"type{table.scalar(1, 'b')}")
    return TensorIO(table.string(3), dtype, tuple(signature if len(signature) == len(shape) else shape),
                    float(scales[0]) if len(scales) == 1 else 0.0, int(zeros[0]) if len(zeros) == 1 else 0)


def read_io(model: bytes | str | Path) -> tuple[TensorIO, TensorIO]:
    """(first input, first output) of subgraph 0; NotTFLite for anything else."""
    buf = model if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise NotTFLite("not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        subgraphs = root.tables(2)
        if not subgraphs:
            raise NotTFLite("no subgraph")
        graph = subgraphs[0]
        tensors = graph.tables(0)
        inputs, outputs = graph.vector(1, "i"), graph.vector(2, "i")
        if not inputs or not outputs:
            raise NotTFLite("subgraph 0 has no input or no output")
        return _tensor(tensors[inputs[0]]), _tensor(tensors[outputs[0]])
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise NotTFLite(f"damaged TFLite flatbuffer ({exc.__class__.__name__})") from exc
