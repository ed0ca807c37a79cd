"""What machine a bench ran on: CPU model and flags, cores, OS, Python, runtime versions — no imports of runtimes."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                     "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "neon")
RUNTIME_PACKAGES = {"tensorflow": "tensorflow", "keras": "keras", "litert": "ai-edge-litert", "onnxruntime": "onnxruntime",
                    "openvino": "openvino", "numpy": "numpy"}


def package_version(distribution: str) -> str | None:
    """Installed version of a distribution, without importing it (None if absent)."""
    for name in (distribution, distribution.replace("-", "_")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if distribution == "onnxruntime":
        return package_version("onnxruntime-gpu") if distribution != "onnxruntime-gpu" else None
    return None


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, sorted(f for f in flags if f in INTERESTING_FLAGS)


def describe(label: str | None = None) -> dict:
    """The environment block of a bench result."""
    cpu, flags = _cpuinfo()
    env = {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "host": platform.node(),
        "runtime_versions": {k: v for k, d in RUNTIME_PACKAGES.items() if (v := package_version(d))},
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if label:
        env["label"] = label
    return env
