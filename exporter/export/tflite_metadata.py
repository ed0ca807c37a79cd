"""Embed TFLite metadata (labels, input normalisation, name, description, version) for mobile apps.

The exported ``.tflite`` carries the ``TFLITE_METADATA`` buffer the TFLite Support / MediaPipe metadata
writers produce: a ``ModelMetadata`` flatbuffer (file identifier ``M001``) in a model buffer named
``TFLITE_METADATA``, plus the label file zipped onto the end of the model. MediaPipe's
``vision.ImageSegmenter`` and the TFLite Support task libraries read it; so does :func:`read_metadata`,
which needs only ``flatbuffers`` and the metadata schema module.

What :func:`add_segmenter_metadata` writes (through MediaPipe's own ``metadata_writer.MetadataWriter``,
the same steps as ``metadata_writers.image_segmenter.MetadataWriter.create`` with our general info):

* ``ModelMetadata``: ``name``, ``description``, ``version``, ``author``, ``min_parser_version``;
* input tensor ``image``: ``ImageProperties`` (RGB), ``NormalizationOptions`` mean/std when given
  (a float32 input needs them: MediaPipe refuses a float input without them; a uint8 input with scale
  1/255 and zero point 0 takes camera bytes as they are and needs none), and ``Stats`` min/max;
* output tensor ``segmentation_masks``: ``ImageProperties`` (GRAYSCALE, content dims 1..2) and the
  associated file ``labels.txt`` (``TENSOR_AXIS_LABELS``, one class name a line, no trailing newline).

By default no ``SEGMENTER_METADATA`` custom metadata (activation) is written: MediaPipe's category mask is
the same argmax with or without a softmax, and leaving it out keeps ``min_parser_version`` at 1.0.0
(the port below computes it; 1.0.0 is what these fields need). Without it MediaPipe's *confidence*
masks are our raw logits; ``activation="softmax"`` makes them probabilities and needs parser 1.5.0.

Measured with MediaPipe 1.2.3 (tests/test_tflite_metadata.py): the category mask equals LiteRT's argmax
on every pixel for the float32 model (normalisation mean 0, std 255) and for the full-int8 model with
uint8 input (scale 1/255, zero point 0, no normalisation), whose output may be uint8, int8 or float32.

MediaPipe 1.2.3's metadata writers import a native module the wheel does not ship
(``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``), used for one thing: computing the
minimum metadata parser version. :func:`min_parser_version` is a port of that C++ function (MediaPipe's
``tasks/cc/metadata/metadata_version.cc``, itself from tflite-support); a stand-in module exposing it is
registered in ``sys.modules`` only when the real one cannot be imported.

Argmax variant: not usable with MediaPipe's ``ImageSegmenter``. A model whose output is the N×H×W uint8
class map (``tf.math.argmax`` then a cast) loads and runs without any error, but MediaPipe wants a
[1, H, W, classes] score tensor and argmaxes it itself: it takes the class map's last axis (the width)
for the classes, and its confidence masks come back all 0 (the uint8 output has no quantisation
parameters, scale 0), so the category mask is all 0; an N×H×W×1 class map gives all 255 instead. Ship the
logits model to MediaPipe apps; the argmax variant is for apps that run the interpreter themselves.

TensorFlow is not imported here. ``import mediapipe`` itself imports TensorFlow when it is installed
(``mediapipe.tasks.python.core.optional_dependencies``), so MediaPipe is imported only inside the
functions that need it, and :func:`read_metadata` loads the generated schema module without importing
the ``mediapipe`` package.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

METADATA_BUFFER_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
ACTIVATIONS = {"none": 0, "sigmoid": 1, "softmax": 2}  # MediaPipe's image_segmenter_metadata_schema.fbs
SEGMENTER_METADATA = "SEGMENTER_METADATA"
ARGMAX_NOTE = ("MediaPipe's ImageSegmenter runs an argmax (class-map) model without error but its category "
               "mask is wrong (constant): it needs the logits model and takes the argmax itself")

_SCHEMA_MODULE = "mediapipe.tasks.metadata.metadata_schema_py_generated"
_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
_isolated_schema: types.ModuleType | None = None


# --------------------------------------------------------------------------------------------------
# Schema access without importing the mediapipe package (and with it TensorFlow).


def _schema() -> types.ModuleType:
    """The generated ``metadata_schema_py_generated`` module (pure Python over ``flatbuffers``).

    Taken, in order, from an already-imported MediaPipe, from MediaPipe's file loaded on its own
    (``import mediapipe`` would pull in TensorFlow), from ``tflite_support``, or from a top-level copy.
    """
    global _isolated_schema
    if _SCHEMA_MODULE in sys.modules:
        return sys.modules[_SCHEMA_MODULE]
    if _isolated_schema is not None:
        return _isolated_schema
    spec = importlib.util.find_spec("mediapipe")  # finds the package without running its __init__
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "tasks" / "metadata" / "metadata_schema_py_generated.py"
            if path.is_file():
                file_spec = importlib.util.spec_from_file_location("_tflite_metadata_schema", path)
                module = importlib.util.module_from_spec(file_spec)
                file_spec.loader.exec_module(module)
                _isolated_schema = module
                return module
    for name in ("tflite_support.metadata_schema_py_generated", "metadata_schema_py_generated"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("reading TFLite metadata needs the generated metadata schema module: "
                      "install mediapipe (or tflite-support), or put metadata_schema_py_generated.py on the path")


def _field_offset(table, slot: int) -> int:
    return table.Offset(4 + 2 * slot)


def _metadata_buffer(model: bytes) -> bytes | None:
    """The ``TFLITE_METADATA`` buffer of a TFLite flatbuffer, or None; reads the Model table by hand."""
    import flatbuffers
    from flatbuffers.table import Table

    buf = bytes(model)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("not a TFLite model (no TFL3 flatbuffer identifier)")
    uoffset = flatbuffers.number_types.UOffsetTFlags
    model_table = Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    # tflite schema, table Model: 4 buffers:[Buffer], 6 metadata:[Metadata];
    # table Metadata: 0 name:string, 1 buffer:uint; table Buffer: 0 data:[ubyte], 1 offset:ulong, 2 size:ulong.
    metadata_field = _field_offset(model_table, 6)
    buffers_field = _field_offset(model_table, 4)
    if not metadata_field or not buffers_field:
        return None
    metadata_vector = model_table.Vector(metadata_field)
    for i in range(model_table.VectorLen(metadata_field)):
        entry = Table(buf, model_table.Indirect(metadata_vector + i * uoffset.bytewidth))
        name_field = _field_offset(entry, 0)
        if not name_field or entry.String(entry.Pos + name_field) != METADATA_BUFFER_NAME.encode():
            continue
        index_field = _field_offset(entry, 1)
        index = entry.Get(flatbuffers.number_types.Uint32Flags, entry.Pos + index_field) if index_field else 0
        if index >= model_table.VectorLen(buffers_field):
            raise ValueError(f"{METADATA_BUFFER_NAME} points at buffer {index}, past the model's buffers")
        buffer = Table(buf, model_table.Indirect(model_table.Vector(buffers_field) + index * uoffset.bytewidth))
        data_field = _field_offset(buffer, 0)
        if data_field:
            start = buffer.Vector(data_field)
            return buf[start:start + buffer.VectorLen(data_field)]
        offset_field, size_field = _field_offset(buffer, 1), _field_offset(buffer, 2)
        if offset_field and size_field:  # buffer stored after the flatbuffer (models over 2 GB)
            offset = buffer.Get(flatbuffers.number_types.Uint64Flags, buffer.Pos + offset_field)
            size = buffer.Get(flatbuffers.number_types.Uint64Flags, buffer.Pos + size_field)
            return buf[offset:offset + size]
        return None
    return None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


# --------------------------------------------------------------------------------------------------
# Minimum metadata parser version: a port of MediaPipe's metadata_version.cc.


def min_parser_version(metadata_buffer: bytes) -> str:
    """The smallest metadata parser version that understands every field in ``metadata_buffer``.

    Same rules as ``GetMinimumMetadataParserVersion`` (MediaPipe ``tasks/cc/metadata/metadata_version.cc``,
    tflite-support ``metadata/cc/metadata_version.cc``): 1.0.0, raised to the version in which each
    populated later addition appeared.
    """
    fb = _schema()
    buf = bytes(metadata_buffer)
    if not fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0):
        raise ValueError("not a TFLite ModelMetadata flatbuffer (no M001 identifier)")
    found = [(1, 0, 0)]

    def files(owner, accessor: str) -> None:
        for i in range(getattr(owner, f"{accessor}Length")()):
            file = getattr(owner, accessor)(i)
            if file.Type() == fb.AssociatedFileType.VOCABULARY:
                found.append((1, 0, 1))
            if file.Type() == fb.AssociatedFileType.SCANN_INDEX_FILE:
                found.append((1, 4, 0))
            if file.Version() is not None:
                found.append((1, 4, 1))

    def process_units(owner, accessor: str) -> None:
        for i in range(getattr(owner, f"{accessor}Length")()):
            kind = getattr(owner, accessor)(i).OptionsType()
            if kind in (fb.ProcessUnitOptions.BertTokenizerOptions,
                        fb.ProcessUnitOptions.SentencePieceTokenizerOptions):
                found.append((1, 1, 0))
            if kind == fb.ProcessUnitOptions.RegexTokenizerOptions:
                found.append((1, 2, 1))

    def tensor(t) -> None:
        files(t, "AssociatedFiles")
        process_units(t, "ProcessUnits")
        content = t.Content()
        if content is not None and content.ContentPropertiesType() == fb.ContentProperties.AudioProperties:
            found.append((1, 3, 0))

    model_metadata = fb.ModelMetadata.GetRootAs(buf, 0)
    for s in range(model_metadata.SubgraphMetadataLength()):
        subgraph = model_metadata.SubgraphMetadata(s)
        for i in range(subgraph.InputTensorMetadataLength()):
            tensor(subgraph.InputTensorMetadata(i))
        for i in range(subgraph.OutputTensorMetadataLength()):
            tensor(subgraph.OutputTensorMetadata(i))
        files(subgraph, "AssociatedFiles")
        if not subgraph.InputProcessUnitsIsNone():
            found.append((1, 1, 0))
            process_units(subgraph, "InputProcessUnits")
        if not subgraph.OutputProcessUnitsIsNone():
            found.append((1, 1, 0))
            process_units(subgraph, "OutputProcessUnits")
        if not subgraph.InputTensorGroupsIsNone() or not subgraph.OutputTensorGroupsIsNone():
            found.append((1, 2, 0))
        if not subgraph.CustomMetadataIsNone():
            found.append((1, 5, 0))
    files(model_metadata, "AssociatedFiles")
    return ".".join(str(v) for v in max(found))


def _register_version_stand_in() -> None:
    """Make ``from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version`` work.

    MediaPipe 1.2.3's wheel lacks this native module, which its metadata writers import only to compute
    the minimum parser version. When (and only when) it cannot be imported, register a stand-in whose
    ``GetMinimumMetadataParserVersion`` is :func:`min_parser_version`, with empty packages for any missing
    parent (``__path__ = []``: nothing else becomes importable under them).
    """
    # find_spec, not try/except around an import: a caught ImportError's traceback forms a cycle that
    # would keep the caller's frame (and MediaPipe's writer, whose __del__ removes its temp folder)
    # alive until the next garbage collection, or until interpreter shutdown.
    parts = _VERSION_MODULE.split(".")
    importlib.import_module(".".join(parts[:2]))  # mediapipe.tasks, the real package
    stub_parent = False
    for depth in range(3, len(parts) + 1):  # mediapipe.tasks.cc ... ._pywrap_metadata_version
        name = ".".join(parts[:depth])
        module = sys.modules.get(name)
        if module is None and importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
        if module is None:
            module = types.ModuleType(name, "Stand-in registered by exporter.export.tflite_metadata: "
                                            "the mediapipe wheel does not ship this native module.")
            if depth < len(parts):
                module.__path__ = []
            else:
                module.GetMinimumMetadataParserVersion = min_parser_version
            sys.modules[name] = module
            if stub_parent:  # attributes only on our own stubs, never on a real package
                setattr(sys.modules[".".join(parts[:depth - 1])], parts[depth - 1], module)
            stub_parent = True
        else:
            stub_parent = False


# --------------------------------------------------------------------------------------------------
# Writing.


def _strip_zip_tail(model: bytes) -> bytes:
    """The model without associated files zipped onto its end (so metadata can be rewritten)."""
    stream = io.BytesIO(model)
    if not zipfile.is_zipfile(stream):
        return model
    with zipfile.ZipFile(stream) as archive:
        infos = archive.infolist()
    return model[:min(info.header_offset for info in infos)] if infos else model


def _check_labels(labels) -> list[str]:
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("labels must name at least one class")
    bad = [label for label in labels if not label or "\n" in label or "\r" in label]
    if bad:
        raise ValueError(f"labels must be non-empty single lines, got {bad!r}")
    return labels


def add_segmenter_metadata(model: bytes, labels: list[str], *, name: str, description: str, version: str = "1",
                           author: str = "unet-export",
                           normalization: tuple[float, float] | None = (0.0, 255.0),
                           activation: str | None = None) -> bytes:
    """Return the model with TFLite metadata (labels, normalisation mean/std or none, description) embedded.

    ``normalization`` is ``(mean, std)`` applied by the app as ``(pixel - mean) / std`` to 0..255 RGB
    pixels, written as MediaPipe's single-value (all channels) ``NormalizationOptions``; ``None`` writes
    none, which suits a uint8-input model and is refused for a float32 input (MediaPipe needs it there).
    ``activation`` (``"softmax"``, ``"sigmoid"`` or ``"none"``) additionally writes MediaPipe's
    ``SEGMENTER_METADATA`` custom metadata, so that its confidence masks are probabilities rather than our
    raw logits; it does not change the category mask, and it raises ``min_parser_version`` to 1.5.0.
    Existing metadata and packed files are replaced. The model's tensors and weights are not changed.
    """
    labels = _check_labels(labels)
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or None, got {activation!r}")
    # Importing MediaPipe the first time leaves reference cycles (exceptions caught during the import)
    # that hold the importing frame, and its callers, until the next garbage collection. The imports
    # happen here and the writer lives in _populate's frame, so that the writer (whose __del__ removes
    # its temp folder) goes as soon as the metadata is written, not at interpreter shutdown.
    modules = _writer_modules()
    return _populate(modules, bytes(model), labels, name=name, description=description, version=version,
                     author=author, normalization=normalization, activation=activation)


def _writer_modules() -> tuple[types.ModuleType, ...]:
    """MediaPipe's TFLite schema, metadata_info, metadata_writer and image_segmenter writer modules."""
    _register_version_stand_in()
    from mediapipe.tasks.metadata import schema_py_generated
    from mediapipe.tasks.python.metadata.metadata_writers import (
        image_segmenter,
        metadata_info,
        metadata_writer,
    )

    return schema_py_generated, metadata_info, metadata_writer, image_segmenter


def _populate(modules, model: bytes, labels: list[str], *, name: str, description: str, version: str,
              author: str, normalization: tuple[float, float] | None, activation: str | None) -> bytes:
    tfl, metadata_info, metadata_writer, image_segmenter = modules
    model_buffer = bytearray(_strip_zip_tail(model))
    if not tfl.Model.ModelBufferHasIdentifier(model_buffer, 0):
        raise ValueError("not a TFLite model (no TFL3 flatbuffer identifier)")
    tflite = tfl.Model.GetRootAs(model_buffer, 0)
    subgraph = tflite.Subgraphs(0)
    if tflite.SubgraphsLength() != 1 or subgraph.InputsLength() != 1 or subgraph.OutputsLength() != 1:
        raise ValueError("expected one subgraph with one image input and one segmentation output")
    input_tensor, output_tensor = subgraph.Tensors(subgraph.Inputs(0)), subgraph.Tensors(subgraph.Outputs(0))
    input_type = input_tensor.Type()
    if input_type not in (tfl.TensorType.FLOAT32, tfl.TensorType.UINT8):
        raise ValueError("MediaPipe image tasks take a float32 or uint8 image input; "
                         f"this model's input is TensorType {input_type}")
    if input_type == tfl.TensorType.FLOAT32 and normalization is None:
        raise ValueError("a float32-input model needs normalization=(mean, std): MediaPipe will not feed "
                         "a float input without NormalizationOptions metadata")
    output_shape = [int(v) for v in output_tensor.ShapeAsNumpy()]
    if len(output_shape) == 4 and output_shape[-1] > 1 and output_shape[-1] != len(labels):
        raise ValueError(f"{len(labels)} labels for {output_shape[-1]} output channels")

    class _Writer(metadata_writer.MetadataWriter):
        def add_general_info(self, model_name, model_description=None):  # + version and author
            self._general_md = metadata_info.GeneralMd(name=model_name, version=version,
                                                       description=model_description, author=author)
            return self

    writer = _Writer.create(model_buffer)
    writer.add_general_info(name, description)
    if normalization is None:
        writer.add_image_input(norm_mean=None, norm_std=None)
    else:
        mean, std = (float(v) for v in normalization)
        if std == 0:
            raise ValueError("normalization std must not be 0")
        writer.add_image_input(norm_mean=[mean], norm_std=[std])
    if activation is not None:
        writer.add_custom_metadata(image_segmenter.ImageSegmenterOptionsMd(
            image_segmenter.Activation[activation.upper()]))
    writer.add_segmentation_output(labels=metadata_writer.Labels().add(labels, exported_filename=LABELS_FILE))
    populated, _json = writer.populate()
    return bytes(populated)


# --------------------------------------------------------------------------------------------------
# Reading.


def read_metadata(model: bytes) -> dict | None:
    """Read back {"name", "description", "version", "author", "labels": [...], "normalization": {"mean": [...],
    "std": [...]} or None, "min_parser_version"} or None if the file has no metadata.

    Also ``"activation"``: MediaPipe's segmenter activation (``"none"``/``"sigmoid"``/``"softmax"``) when
    ``SEGMENTER_METADATA`` is present, else None.

    Needs only ``flatbuffers`` and the metadata schema module; labels come from the label file
    (``TENSOR_AXIS_LABELS`` on the output tensor) in the zip appended to the model.
    """
    buf = bytes(model)
    metadata_buffer = _metadata_buffer(buf)
    if metadata_buffer is None:
        return None
    fb = _schema()
    if not fb.ModelMetadata.ModelMetadataBufferHasIdentifier(metadata_buffer, 0):
        raise ValueError(f"{METADATA_BUFFER_NAME} buffer is not a ModelMetadata flatbuffer (no M001 identifier)")
    meta = fb.ModelMetadata.GetRootAs(metadata_buffer, 0)
    normalization, label_file, activation = None, None, None
    if meta.SubgraphMetadataLength():
        subgraph = meta.SubgraphMetadata(0)
        for i in range(subgraph.CustomMetadataLength()):
            custom = subgraph.CustomMetadata(i)
            if custom.Name() == SEGMENTER_METADATA.encode() and not custom.DataIsNone():
                activation = _segmenter_activation(custom.DataAsNumpy().tobytes())
        if subgraph.InputTensorMetadataLength():
            image = subgraph.InputTensorMetadata(0)
            for i in range(image.ProcessUnitsLength()):
                unit = image.ProcessUnits(i)
                if unit.OptionsType() == fb.ProcessUnitOptions.NormalizationOptions:
                    options = fb.NormalizationOptions()
                    options.Init(unit.Options().Bytes, unit.Options().Pos)
                    normalization = {"mean": [float(options.Mean(j)) for j in range(options.MeanLength())],
                                     "std": [float(options.Std(j)) for j in range(options.StdLength())]}
        for t in range(subgraph.OutputTensorMetadataLength()):
            tensor = subgraph.OutputTensorMetadata(t)
            candidates = [tensor.AssociatedFiles(i) for i in range(tensor.AssociatedFilesLength())]
            candidates = [f for f in candidates if f.Type() == fb.AssociatedFileType.TENSOR_AXIS_LABELS]
            if candidates:  # prefer the label file without a locale
                label_file = sorted(candidates, key=lambda f: f.Locale() is not None)[0].Name().decode("utf-8")
                break
    labels: list[str] = []
    if label_file is not None:
        with zipfile.ZipFile(io.BytesIO(buf)) as archive:
            lines = archive.read(label_file).decode("utf-8").split("\n")
        labels = [line.removesuffix("\r") for line in lines[:-1 if lines[-1] == "" else None]]
    return {
        "name": _text(meta.Name()),
        "description": _text(meta.Description()),
        "version": _text(meta.Version()),
        "author": _text(meta.Author()),
        "labels": labels,
        "normalization": normalization,
        "min_parser_version": _text(meta.MinParserVersion()),
        "activation": activation,
    }


def _segmenter_activation(data: bytes) -> str:
    """The activation in MediaPipe's ImageSegmenterOptions flatbuffer (``V001``; field 0, a byte enum)."""
    import flatbuffers
    from flatbuffers.table import Table

    options = Table(data, flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0))
    field = _field_offset(options, 0)
    value = options.Get(flatbuffers.number_types.Int8Flags, options.Pos + field) if field else 0
    return {v: k for k, v in ACTIVATIONS.items()}.get(value, f"unknown({value})")


# --------------------------------------------------------------------------------------------------
# Running MediaPipe.


def mediapipe_category_mask(model_path: str, image: np.ndarray) -> np.ndarray:
    """Run MediaPipe's ImageSegmenter (IMAGE mode, category mask) on one H×W×3 uint8 RGB frame the size of
    the model input; return H×W uint8."""
    from mediapipe.tasks.metadata import schema_py_generated as tfl
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import image_segmenter
    from mediapipe.tasks.python.vision.core.image import Image, ImageFormat
    from mediapipe.tasks.python.vision.core.vision_task_running_mode import VisionTaskRunningMode

    frame = np.asarray(image)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected one H×W×3 uint8 RGB frame, got {frame.dtype} {frame.shape}")
    model = tfl.Model.GetRootAs(Path(model_path).read_bytes(), 0)
    subgraph = model.Subgraphs(0)
    input_shape = tuple(int(v) for v in subgraph.Tensors(subgraph.Inputs(0)).ShapeAsNumpy())
    if input_shape[1:3] != frame.shape[:2]:  # MediaPipe would resize, and the mask would not be ours
        raise ValueError(f"frame is {frame.shape[:2]}, the model input {input_shape}: pass a frame of the input size")
    options = image_segmenter.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        running_mode=VisionTaskRunningMode.IMAGE,
        output_confidence_masks=False,
        output_category_mask=True,
    )
    with image_segmenter.ImageSegmenter.create_from_options(options) as segmenter:
        result = segmenter.segment(Image(image_format=ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
        mask = np.array(result.category_mask.numpy_view(), dtype=np.uint8, copy=True)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"MediaPipe returned a {mask.shape} mask for a {frame.shape[:2]} frame")
    return mask
