"""What machine a bench ran on: CPU model and flags, cores, OS, Python, runtime versions — no imports of runtimes."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import struct
import threading
from pathlib import Path

from exporter.runtimes.base import distribution_version

INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                     "amx_bf16", "amx_int8", "asimd", "asimdhp", "asimddp", "asimdfhm", "sve", "sve2", "i8mm",
                     "svei8mm", "bf16", "svebf16", "neon")
ARCH_FAMILIES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _read(path: str) -> str:
    """A text file's content, stripped; '' where it cannot be read."""
    try:
        with open(path, errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _cpuinfo_text() -> str:
    return _read("/proc/cpuinfo")


def _cpuinfo(every_flag: bool = False) -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    for line in _cpuinfo_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = value.split()
    return model, sorted(f for f in flags if every_flag or f in INTERESTING_FLAGS)


def is_arm() -> bool:
    """64-bit Arm code. A 32-bit userland on a 64-bit kernel (Raspberry Pi OS 32-bit) also says 'aarch64', but its
    auxiliary vector holds 32-bit Arm hwcaps, which the aarch64 table would misread."""
    return ARCH_FAMILIES.get(platform.machine().lower()) == "aarch64" and struct.calcsize("P") == 8


def _real_executable() -> str:
    """The program the kernel runs for this thread. qemu-user answers /proc/self/exe with the emulated program,
    but not the thread's own entry, which names the emulator (qemu-aarch64); '' where it cannot be read."""
    try:
        return os.readlink(f"/proc/self/task/{threading.get_native_id()}/exe")
    except OSError:
        return ""


def emulation() -> str | None:
    """Why this process looks emulated (user-mode, as qemu-user runs it), or None.

    Under user-mode emulation the kernel is the host's: its architecture (``/proc/sys/kernel/arch``, Linux 6.1+)
    is not this process's, the thread's real executable is the emulator, and ``/proc/cpuinfo`` is the host's
    (qemu 7) or one qemu writes (qemu 8+). Latency measured so says nothing about the emulated CPU. Only such
    evidence counts: a VM whose CPUID and /proc/cpuinfo disagree is not called emulated.
    """
    exe = _real_executable()
    if "qemu" in Path(exe).name:
        return f"user-mode emulation: this process runs under {Path(exe).name} ({exe})"
    machine = ARCH_FAMILIES.get(platform.machine().lower())
    kernel = ARCH_FAMILIES.get(_read("/proc/sys/kernel/arch").lower())
    if machine and kernel and machine != kernel:
        return f"user-mode emulation: {machine} code under an {kernel} kernel"
    x86_file = any(line.split(":")[0].strip() == "vendor_id" for line in _cpuinfo_text().splitlines())
    if machine == "aarch64" and x86_file:
        return "user-mode emulation: aarch64 code under an x86_64 kernel (/proc/cpuinfo is the host's)"
    return None


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
    kernels avoid this). Arm, from the auxiliary vector: ``i8mm`` (SMMLA), ``dotprod`` (SDOT/UDOT), ``neon``
    (neither: a Pi 4's Cortex-A72). ``unknown``: anything else.
    """
    if is_arm():
        from exporter.bench.arm_cpu import auxv_hwcaps, hwcap_names
        from exporter.bench.arm_cpu import int8_dot_product as arm_dot

        return arm_dot(hwcap_names(*(auxv_hwcaps() or (0, 0))))
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


def cpu_description(emulated: bool = False) -> dict:
    """cpu (model), cpu_flags, int8_dot_product, and on Arm the MIDR(s) the model was named from.

    x86: /proc/cpuinfo's model name and flags (CPUID decides the int8 dot product). Arm: the MIDR and the
    auxiliary vector (``exporter.bench.arm_cpu``), never an emulating host's /proc/cpuinfo or sysfs
    (``emulated``: what ``emulation()`` found).
    """
    if not is_arm():
        cpu, flags = _cpuinfo()
        return {"cpu": cpu, "cpu_flags": flags, "int8_dot_product": int8_dot_product()}
    from exporter.bench.arm_cpu import describe_arm

    arm = describe_arm(_cpuinfo_text(), emulated=emulated)  # an x86 host's file has no 'CPU part'
    return {"cpu": arm["model"] or "Arm (model not reported)",
            "cpu_flags": sorted(f for f in arm["features"] if f in INTERESTING_FLAGS),
            "int8_dot_product": arm["int8_dot_product"], "midr": arm["midr"], "cpu_source": arm["model_source"]}


def describe(label: str | None = None) -> dict:
    """The environment block of a bench result."""
    why_emulated = emulation()
    env = {
        **cpu_description(emulated=why_emulated is not None),
        "emulated": why_emulated is not None,
        "cores": os.cpu_count(),
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "host": platform.node(),
        "runtime_versions": runtime_versions(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if why_emulated:
        env["emulation"] = why_emulated
    from exporter.runtimes.web import web_environment

    web = web_environment()
    if web:
        env["web"] = web
    if label:
        env["label"] = label
    return env
