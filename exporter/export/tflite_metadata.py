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

MediaPipe 1.2.3's metadata writers need a native module its wheel lacks: ``mediapipe_compat`` supplies it.

Argmax variant: not usable with MediaPipe's ``ImageSegmenter``. A model whose output is the N×H×W uint8
class map (``tf.math.argmax`` then a cast) loads and runs without any error, but MediaPipe wants a
[1, H, W, classes] score tensor and argmaxes it itself: it takes the class map's last axis (the width)
for the classes, and its confidence masks come back all 0 (the uint8 output has no quantisation
parameters, scale 0), so the category mask is all 0; an N×H×W×1 class map gives all 255 instead. Ship the
logits model to MediaPipe apps; the argmax variant is for apps that run the interpreter themselves. Its metadata
(``class_map=True``) therefore describes the output as a ``class_map`` feature tensor with the labels, not as
MediaPipe's segmentation masks; MediaPipe 1.2.3 still runs such a file without complaint (its uint8 input needs
no metadata), so ``unet-bench``'s MediaPipe runtime and ``unet-export webapp`` refuse an argmax file themselves.

TensorFlow is not imported here. ``import mediapipe`` itself imports TensorFlow when it is installed
(``mediapipe.tasks.python.core.optional_dependencies``), so MediaPipe is imported only inside the
functions that need it, and :func:`read_metadata` loads the generated schema module without importing
the ``mediapipe`` package.
"""

from __future__ import annotations

import io
import types
import zipfile

from exporter.export.mediapipe_compat import generated, register_version_stand_in

METADATA_BUFFER_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
ACTIVATIONS = {"none": 0, "sigmoid": 1, "softmax": 2}  # MediaPipe's image_segmenter_metadata_schema.fbs
SEGMENTER_METADATA = "SEGMENTER_METADATA"
CLASS_MAP_DESCRIPTION = ("N×H×W uint8 class ids (an in-graph argmax; names in labels.txt). Not score channels: "
                         "not for MediaPipe's ImageSegmenter, which needs the logits model")
ARGMAX_NOTE = ("MediaPipe's ImageSegmenter runs an argmax (class-map) model without error but its category "
               "mask is wrong (constant): it needs the logits model and takes the argmax itself")


def _metadata_buffer(model: bytes) -> bytes | None:
    """The ``TFLITE_METADATA`` buffer of a TFLite model, or None, read through the generated TFLite schema."""
    tfl = generated("schema_py_generated")
    buf = bytes(model)
    if len(buf) < 8 or not tfl.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError("not a TFLite model (no TFL3 flatbuffer identifier)")
    tflite = tfl.Model.GetRootAs(buf, 0)
    for i in range(tflite.MetadataLength()):
        entry = tflite.Metadata(i)
        if entry.Name() != METADATA_BUFFER_NAME.encode():
            continue
        index = entry.Buffer()
        if index >= tflite.BuffersLength():
            raise ValueError(f"{METADATA_BUFFER_NAME} points at buffer {index}, past the model's buffers")
        buffer = tflite.Buffers(index)
        if buffer.DataLength():
            return buffer.DataAsNumpy().tobytes()
        if buffer.Offset() and buffer.Size():  # buffer stored after the flatbuffer (models over 2 GB)
            return buf[buffer.Offset():buffer.Offset() + buffer.Size()]
        return None
    return None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


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
                           activation: str | None = None, class_map: bool = False) -> bytes:
    """Return the model with TFLite metadata (labels, normalisation mean/std or none, description) embedded.

    ``normalization`` is ``(mean, std)`` applied by the app as ``(pixel - mean) / std`` to 0..255 RGB
    pixels, written as MediaPipe's single-value (all channels) ``NormalizationOptions``; ``None`` writes
    none, which suits a uint8-input model and is refused for a float32 input (MediaPipe needs it there).
    ``activation`` (``"softmax"``, ``"sigmoid"`` or ``"none"``) additionally writes MediaPipe's
    ``SEGMENTER_METADATA`` custom metadata, so that its confidence masks are probabilities rather than our
    raw logits; it does not change the category mask, and it raises ``min_parser_version`` to 1.5.0.
    ``class_map``: the output is an in-graph argmax; it is described as a ``class_map`` feature tensor with the
    label file, not as MediaPipe's ``segmentation_masks`` (whose image properties say "score channels").
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
                     author=author, normalization=normalization, activation=activation, class_map=class_map)


def _writer_modules() -> tuple[types.ModuleType, ...]:
    """MediaPipe's TFLite schema, metadata_info, metadata_writer and image_segmenter writer modules."""
    register_version_stand_in()
    from mediapipe.tasks.metadata import schema_py_generated
    from mediapipe.tasks.python.metadata.metadata_writers import (
        image_segmenter,
        metadata_info,
        metadata_writer,
    )

    return schema_py_generated, metadata_info, metadata_writer, image_segmenter


def _populate(modules, model: bytes, labels: list[str], *, name: str, description: str, version: str,
              author: str, normalization: tuple[float, float] | None, activation: str | None,
              class_map: bool = False) -> bytes:
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
    label_files = metadata_writer.Labels().add(labels, exported_filename=LABELS_FILE)
    if class_map:
        writer._output_mds.append(metadata_info.TensorMd(  # noqa: SLF001 - the writer has no public way to label
            name="class_map", description=CLASS_MAP_DESCRIPTION,  # a feature tensor
            associated_files=writer._create_label_file_md(label_files)))  # noqa: SLF001
    else:
        writer.add_segmentation_output(labels=label_files)
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
    fb = generated("metadata_schema_py_generated")
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
    """The activation in MediaPipe's ImageSegmenterOptions flatbuffer (``V001``)."""
    options = generated("image_segmenter_metadata_schema_py_generated").ImageSegmenterOptions.GetRootAs(data, 0)
    value = options.Activation()
    return {v: k for k, v in ACTIVATIONS.items()}.get(value, f"unknown({value})")
