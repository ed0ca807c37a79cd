"""What machine a bench ran on: CPU model and flags, cores, OS, Python, runtime versions — no imports of runtimes."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

from exporter.runtimes.base import distribution_version

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                     "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "neon")


def _cpuinfo(every_flag: bool = False) -> tuple[str, list[str]]:
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
    return model, sorted(f for f in flags if every_flag or f in INTERESTING_FLAGS)


def cpu_features() -> dict[str, bool]:
    """What the CPU's CPUID says, as numpy's dispatcher read it (``AVX2``, ``AVX512VNNI``, ``ASIMDDP``…).

    CPUID is what a runtime's kernels dispatch on. ``/proc/cpuinfo`` is not: under an emulator such as
    ``qemu-x86_64 -cpu EPYC-Milan`` it still lists the host's flags. Empty if numpy does not expose it.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover - numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return {}
    return dict(features)


def _trusted_cpuinfo_flags(features: dict[str, bool]) -> set[str]:
    """/proc/cpuinfo's flags where they agree with CPUID on AVX2 and AVX-512 (else they describe another CPU)."""
    _, flags = _cpuinfo(every_flag=True)
    agree = all(bool(features.get(key)) == (flag in flags) for key, flag in (("AVX2", "avx2"), ("AVX512F", "avx512f")))
    return set(flags) if agree else set()


def int8_dot_product() -> str:
    """How this CPU multiplies int8 in the runtimes' quantized kernels (a label; reported with bench results).

    ``vnni``: x86 with AVX512-VNNI or AVX-VNNI (VPDPBUSD accumulates u8×s8 straight into 32 bits). ``vpmaddubsw``: x86
    without it; OpenVINO's and ONNX Runtime's u8×s8 kernels then add pairs of products in 16 bits, which
    saturate, so the same int8 file drifts further from float there than on a VNNI machine (LiteRT's
    kernels avoid this). ``dotprod``/``neon``: Arm. ``unknown``: anything else.
    """
    features = cpu_features()
    if features.get("AVX512VNNI"):
        return "vnni"
    if features.get("AVX2") and "avx_vnni" in _trusted_cpuinfo_flags(features):  # numpy has no AVX-VNNI key
        return "vnni"
    if features.get("AVX2") or features.get("SSSE3"):
        return "vpmaddubsw"
    if features.get("ASIMDDP"):
        return "dotprod"
    if features.get("ASIMD") or features.get("NEON"):
        return "neon"
    return "unknown"


def gpus() -> list[str]:
    """The GPUs this machine shows, read without any framework: NVIDIA's driver names each card; other
    GPUs show as render nodes (/dev/dri/renderD*)."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            model = next((line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                          if line.startswith("Model:")), None)
        except OSError:
            model = None
        names.append(model or "NVIDIA GPU")
    if not names:
        names = [f"render node {p.name}" for p in sorted(Path("/dev/dri").glob("renderD*"))]
    return names


def runtime_versions() -> dict[str, str]:
    """The installed version of every package a registered runtime names (read without importing it), and numpy."""
    from exporter.runtimes import RUNTIMES, runtime_names

    packages = {key: names for name in runtime_names() for key, names in RUNTIMES[name].packages().items()}
    packages["numpy"] = ("numpy",)
    return {key: version for key, names in packages.items() if (version := distribution_version(*names))}


def describe(label: str | None = None) -> dict:
    """The environment block of a bench result."""
    cpu, flags = _cpuinfo()
    env = {
        "cpu": cpu,
        "cpu_flags": flags,
        "int8_dot_product": int8_dot_product(),
        "cores": os.cpu_count(),
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "host": platform.node(),
        "runtime_versions": runtime_versions(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if label:
        env["label"] = label
    return env
