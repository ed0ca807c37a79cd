"""What an Arm CPU is and can do, as its runtimes see it: the core from the MIDR, the features from the auxiliary
vector. Standard library only (ctypes), nothing imported at module level beyond it.

``/proc/cpuinfo`` is not enough on Arm: on a real board it has no model name (only ``CPU implementer`` and ``CPU
part`` numbers), and under user-mode emulation (qemu-user) it is the *host's* file, an x86 CPU with AVX-512 flags.
The kernel (or the emulator) answers for the CPU the code runs on in two places: the auxiliary vector
(``getauxval(AT_HWCAP)``: ``asimddp``, ``sve``…; ``AT_HWCAP2``: ``i8mm``, ``bf16``…), which is what XNNPACK, ONNX
Runtime's MLAS and OpenVINO pick their kernels by, and the MIDR register (implementer and part: 0x41/0xd08 is a
Cortex-A72), read from sysfs on a real board or, where sysfs is another machine's, with the ``mrs`` instruction the
kernel and qemu emulate for user space when ``cpuid`` is in the hwcaps.
"""

from __future__ import annotations

import ctypes
import mmap
import re
from collections import Counter
from pathlib import Path

AT_HWCAP, AT_HWCAP2 = 16, 26

# Linux arch/arm64/include/uapi/asm/hwcap.h, bit by bit; the names are the kernel's /proc/cpuinfo names.
HWCAP_NAMES = ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
               "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
               "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg")
HWCAP2_NAMES = ("dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
                "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte")

IMPLEMENTERS = {0x41: "Arm", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon", 0x4E: "NVIDIA",
                0x51: "Qualcomm", 0x53: "Samsung", 0x61: "Apple", 0x6D: "Microsoft", 0xC0: "Ampere"}
PARTS = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD06): "Cortex-A65", (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD0E): "Cortex-A76AE", (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78", (0x41, 0xD42): "Cortex-A78AE", (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD4C): "Cortex-X1C", (0x41, 0xD83): "Neoverse-V3AE", (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4A): "Neoverse-E1", (0x41, 0xD4B): "Cortex-A78C", (0x41, 0xD4D): "Cortex-A715",
    (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD4F): "Neoverse-V2", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4", (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD85): "Cortex-X925", (0x41, 0xD87): "Cortex-A725", (0x41, 0xD8E): "Neoverse-N3",
    (0x46, 0x001): "A64FX", (0x48, 0xD01): "TaiShan v110", (0x4E, 0x004): "Carmel",
    (0x51, 0x800): "Kryo 2xx Gold", (0x51, 0x801): "Kryo 2xx Silver", (0x51, 0x802): "Kryo 3xx Gold",
    (0x51, 0x803): "Kryo 3xx Silver", (0x51, 0x804): "Kryo 4xx Gold", (0x51, 0x805): "Kryo 4xx Silver",
    (0xC0, 0xAC3): "AmpereOne",
}
HWCAP_CPUID = 1 << HWCAP_NAMES.index("cpuid")


def midr_name(midr: int) -> str:
    """'Cortex-A72' for 0x410fd083; 'Arm part 0xd99' or 'implementer 0x00 part 0x051' where the table has none."""
    implementer, part = (midr >> 24) & 0xFF, (midr >> 4) & 0xFFF
    if (implementer, part) in PARTS:
        return PARTS[(implementer, part)]
    maker = IMPLEMENTERS.get(implementer, f"implementer 0x{implementer:02x}")
    return f"{maker} part 0x{part:03x}"


def model_name(midrs: list[int]) -> str | None:
    """One name for the cores: 'Cortex-A72', or 'Cortex-A76 ×4 + Cortex-A55 ×4' on a big.LITTLE phone."""
    counts = Counter(midr_name(m) for m in midrs)
    if not counts:
        return None
    if len(counts) == 1:
        return next(iter(counts))
    return " + ".join(f"{name} ×{n}" for name, n in counts.most_common())


def hwcap_names(hwcap: int, hwcap2: int) -> list[str]:
    """The feature names set in AT_HWCAP and AT_HWCAP2, as the kernel's /proc/cpuinfo would list them."""
    return ([name for bit, name in enumerate(HWCAP_NAMES) if hwcap >> bit & 1]
            + [name for bit, name in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1])


def auxv_hwcaps() -> tuple[int, int] | None:
    """(AT_HWCAP, AT_HWCAP2) of this process, from the C library's getauxval; None where there is none."""
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return int(getauxval(AT_HWCAP)), int(getauxval(AT_HWCAP2))


def sysfs_midrs(root: Path = Path("/sys/devices/system/cpu")) -> list[int]:
    """Each core's MIDR_EL1 as Linux on arm64 exposes it (empty elsewhere, and under user-mode emulation)."""
    midrs = []
    for path in sorted(root.glob("cpu[0-9]*/regs/identification/midr_el1")):
        try:
            midrs.append(int(path.read_text().strip(), 16))
        except (OSError, ValueError):
            continue
    return midrs


def cpuinfo_midrs(text: str) -> list[int]:
    """MIDRs rebuilt from an arm64 /proc/cpuinfo's 'CPU implementer', 'CPU variant', 'CPU part', 'CPU revision'."""
    midrs = []
    for block in re.split(r"\n\s*\n", text):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        try:
            implementer, part = int(fields["cpu implementer"], 0), int(fields["cpu part"], 0)
            variant = int(fields.get("cpu variant", "0") or "0", 0)
            revision = int(fields.get("cpu revision", "0") or "0", 0)
        except (KeyError, ValueError):
            continue
        midrs.append(implementer << 24 | variant << 20 | 0xF << 16 | part << 4 | revision)
    return midrs


def mrs_midr() -> int | None:
    """MIDR_EL1 read with ``mrs x0, midr_el1`` in this process (the kernel, or qemu-user, emulates the read).

    Only called on aarch64 with ``cpuid`` in AT_HWCAP (without it the instruction is an illegal-instruction
    signal). The two instructions are written to a file first and mapped executable from it, so the kernel brings
    the instruction cache in line when the page is faulted in (a page written through an anonymous writable
    mapping could run stale bytes on a real core). None where the C library or the system refuses.
    """
    import tempfile

    code = (0xD5380000).to_bytes(4, "little") + (0xD65F03C0).to_bytes(4, "little")  # mrs x0, midr_el1; ret
    try:
        libc = ctypes.CDLL(None)
        libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        with tempfile.TemporaryFile() as fh:
            fh.write(code.ljust(mmap.PAGESIZE, b"\0"))
            fh.flush()
            address = libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC, mmap.MAP_PRIVATE, fh.fileno(), 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            return int(ctypes.CFUNCTYPE(ctypes.c_uint64)(address)())
        finally:
            libc.munmap(address, mmap.PAGESIZE)
    except (OSError, AttributeError, TypeError, ValueError):
        return None


def int8_dot_product(features: list[str]) -> str:
    """'i8mm' (SMMLA/UMMLA: 8×8 int8 matrix tiles), 'dotprod' (SDOT/UDOT), 'neon' (widening multiplies only)."""
    if "i8mm" in features:
        return "i8mm"
    if "asimddp" in features:
        return "dotprod"
    return "neon" if "asimd" in features else "unknown"


def describe_arm(cpuinfo_text: str, emulated: bool = False) -> dict:
    """model (or None), features (the hwcap names), int8 dot product, and where the model came from.
    ``emulated``: sysfs is the host's (an Arm server emulating a Cortex-A72 would name itself), so it is not read."""
    hwcaps = auxv_hwcaps() or (0, 0)
    features = hwcap_names(*hwcaps)
    midrs, source = ([] if emulated else sysfs_midrs()), "sysfs midr_el1"
    if not midrs:
        midrs, source = cpuinfo_midrs(cpuinfo_text), "/proc/cpuinfo"
    if not midrs and hwcaps[0] & HWCAP_CPUID and (midr := mrs_midr()) is not None:
        midrs, source = [midr], "mrs midr_el1"
    return {"model": model_name(midrs), "midr": [f"0x{m:08x}" for m in sorted(set(midrs))],
            "model_source": source if midrs else None, "features": features,
            "int8_dot_product": int8_dot_product(features)}
