"""MediaPipe 1.2.3 as this project uses it: its generated flatbuffer schemas, and the one native module its wheel lacks.

Tied to the pinned ``mediapipe`` version (see the host constraints). Two things:

* ``generated(name)``: MediaPipe's generated schema modules (``schema_py_generated`` for the TFLite model,
  ``metadata_schema_py_generated``, ``image_segmenter_metadata_schema_py_generated``), pure Python over
  ``flatbuffers``, loaded from their files without running ``import mediapipe`` — which imports TensorFlow
  when it is installed (``mediapipe.tasks.python.core.optional_dependencies``).
* MediaPipe 1.2.3's metadata writers import ``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``,
  a native module the wheel does not ship, for one thing: the minimum metadata parser version.
  :func:`min_parser_version` is a port of that C++ function (MediaPipe's
  ``tasks/cc/metadata/metadata_version.cc``, itself from tflite-support), and
  :func:`register_version_stand_in` registers a stand-in module exposing it, only when the real one cannot be
  imported. When a MediaPipe release ships the module, the stand-in is never used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
_loaded: dict[str, types.ModuleType] = {}


def generated(name: str) -> types.ModuleType:
    """MediaPipe's generated ``mediapipe/tasks/metadata/<name>.py`` module, without importing mediapipe.

    Taken from an already-imported MediaPipe, else from MediaPipe's file loaded on its own, else from
    ``tflite_support`` or a top-level copy of the same module.
    """
    full = f"mediapipe.tasks.metadata.{name}"
    if full in sys.modules:
        return sys.modules[full]
    if name in _loaded:
        return _loaded[name]
    spec = importlib.util.find_spec("mediapipe")  # finds the package without running its __init__
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / "tasks" / "metadata" / f"{name}.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location(f"_unet_export_{name}", path)
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            _loaded[name] = module
            return module
    for candidate in (f"tflite_support.{name}", name):
        try:
            return importlib.import_module(candidate)
        except ImportError:
            continue
    raise ImportError(f"reading TFLite metadata needs the generated schema module {name}: install mediapipe "
                      f"(or tflite-support), or put {name}.py on the path")


# --------------------------------------------------------------------------------------------------
# Minimum metadata parser version: a port of MediaPipe's metadata_version.cc.


def min_parser_version(metadata_buffer: bytes) -> str:
    """The smallest metadata parser version that understands every field in ``metadata_buffer``.

    Same rules as ``GetMinimumMetadataParserVersion`` (MediaPipe ``tasks/cc/metadata/metadata_version.cc``,
    tflite-support ``metadata/cc/metadata_version.cc``): 1.0.0, raised to the version in which each
    populated later addition appeared.
    """
    fb = generated("metadata_schema_py_generated")
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


def register_version_stand_in() -> None:
    """Make ``from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version`` work.

    MediaPipe 1.2.3's wheel lacks this native module, which its metadata writers import only to compute
    the minimum parser version. When (and only when) it cannot be imported, register a stand-in whose
    ``GetMinimumMetadataParserVersion`` is :func:`min_parser_version`, with empty packages for any missing
    parent (``__path__ = []``: nothing else becomes importable under them).
    """
    # find_spec, not try/except around an import: a caught ImportError's traceback forms a cycle that
    # would keep the caller's frame (and MediaPipe's writer, whose __del__ removes its temp folder)
    # alive until the next garbage collection, or until interpreter shutdown.
    parts = VERSION_MODULE.split(".")
    importlib.import_module(".".join(parts[:2]))  # mediapipe.tasks, the real package
    stub_parent = False
    for depth in range(3, len(parts) + 1):  # mediapipe.tasks.cc ... ._pywrap_metadata_version
        name = ".".join(parts[:depth])
        module = sys.modules.get(name)
        if module is None and importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
        if module is None:
            module = types.ModuleType(name, "Stand-in registered by exporter.export.mediapipe_compat: "
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
