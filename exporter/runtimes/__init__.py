"""Runtime adapters: run any exported artifact on every runtime present, float frames in.

A runtime is one module here: a ``Runtime`` subclass registered with ``@register`` (see ``base.py``). Every
module of this package is imported when the package is, so dropping a new adapter file in is all it takes for
``unet-bench run`` to plan it, report its version and say how to install it. Adapters kept outside the install
work the same way from the folders named in ``$UNET_RUNTIME_PATH`` (separated like ``$PATH``). Importing this package imports no
framework: each adapter imports its runtime inside ``load``, so a device with numpy, click and a single runtime
can use it (the others report ``available()`` reasons).
"""

import importlib
import os
import pkgutil
import sys

from exporter.runtimes.base import (
    RUNTIMES,
    Loaded,
    ModelLoadError,
    Runtime,
    RuntimeUnavailable,
    TensorInfo,
    get_runtime,
    runtime_names,
    runtimes_for,
)

PATH_ENV = "UNET_RUNTIME_PATH"
BROKEN: dict[str, str] = {}  # adapter module → why it could not be imported


def discover() -> list[str]:
    """Import every adapter module of this package and of the folders in ``$UNET_RUNTIME_PATH``; the registry's
    names in default order."""
    for folder in filter(None, os.environ.get(PATH_ENV, "").split(os.pathsep)):
        if folder not in __path__:
            __path__.append(folder)
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name in BROKEN:
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except Exception as exc:  # one broken adapter file must not take every command down with it
            BROKEN[info.name] = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:200]
            sys.stderr.write(f"warning: runtime adapter {info.module_finder.path}/{info.name}.py left out "
                             f"({BROKEN[info.name]})\n")
    return runtime_names()


discover()

__all__ = ["RUNTIMES", "Loaded", "ModelLoadError", "Runtime", "RuntimeUnavailable", "TensorInfo", "discover",
           "get_runtime", "runtime_names", "runtimes_for"]
