"""The environment on Arm: the core named from the MIDR, the features from the auxiliary vector, emulation said,
and an emulated bench's tables without latency. The parsing is checked here on any machine (the register values
are the ones qemu's and real cores report); make test-arm64 runs the same code on emulated Arm CPUs."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from exporter.bench import arm_cpu, environment, tables
from exporter.bench.compare import comparison, render
from exporter.contracts.bench_json import BenchResult

# A Raspberry Pi 4's /proc/cpuinfo (four Cortex-A72 cores; no model name, features under "Features")
PI4_CPUINFO = "".join(f"""processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

""" for i in range(4)) + "Hardware\t: BCM2835\nRevision\t: d03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"

X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f\n"
HWCAP_A72 = sum(1 << arm_cpu.HWCAP_NAMES.index(f) for f in ("fp", "asimd", "crc32", "cpuid"))
HWCAP_A76 = HWCAP_A72 | 1 << arm_cpu.HWCAP_NAMES.index("asimddp")
HWCAP_V1 = HWCAP_A76 | 1 << arm_cpu.HWCAP_NAMES.index("sve")
HWCAP2_V1 = sum(1 << arm_cpu.HWCAP2_NAMES.index(f) for f in ("i8mm", "bf16", "svei8mm", "svebf16"))


def test_midr_names_the_core_and_says_what_it_does_not_know():
    assert arm_cpu.midr_name(0x410FD083) == "Cortex-A72"   # qemu -cpu cortex-a72, and a Pi 4
    assert arm_cpu.midr_name(0x414FD0B1) == "Cortex-A76"   # a Pi 5
    assert arm_cpu.midr_name(0x414FD0C1) == "Neoverse-N1"
    assert arm_cpu.midr_name(0x411FD402) == "Neoverse-V1"
    assert arm_cpu.midr_name(0x410FD999) == "Arm part 0xd99"
    assert arm_cpu.midr_name(0x000F0510) == "implementer 0x00 part 0x051"  # qemu -cpu max
    big_little = [0x411FD410] * 2 + [0x412FD050] * 6
    assert arm_cpu.model_name(big_little) == "Cortex-A55 ×6 + Cortex-A78 ×2"
    assert arm_cpu.model_name([]) is None


def test_features_from_the_auxiliary_vector_decide_the_int8_dot_product():
    assert arm_cpu.hwcap_names(HWCAP_A72, 0) == ["fp", "asimd", "crc32", "cpuid"]
    assert arm_cpu.int8_dot_product(arm_cpu.hwcap_names(HWCAP_A72, 0)) == "neon"
    assert arm_cpu.int8_dot_product(arm_cpu.hwcap_names(HWCAP_A76, 0)) == "dotprod"
    v1 = arm_cpu.hwcap_names(HWCAP_V1, HWCAP2_V1)
    assert {"sve", "i8mm", "bf16", "svei8mm"} <= set(v1) and arm_cpu.int8_dot_product(v1) == "i8mm"
    assert arm_cpu.int8_dot_product([]) == "unknown"


def test_a_boards_cpuinfo_and_sysfs_give_the_midr(tmp_path):
    assert arm_cpu.cpuinfo_midrs(PI4_CPUINFO) == [0x410FD083] * 4
    assert arm_cpu.cpuinfo_midrs(X86_CPUINFO) == []
    assert arm_cpu.cpuinfo_midrs("CPU implementer\t: 0x41\nCPU variant\t: r0\nCPU part\t: 0xd08\n") == []
    for i, midr in enumerate(["0x00000000410fd0b1", "0x00000000410fd0b1", "0x00000000410fd050"]):
        folder = tmp_path / f"cpu{i}/regs/identification"
        folder.mkdir(parents=True)
        (folder / "midr_el1").write_text(midr + "\n")
    (tmp_path / "cpufreq").mkdir()
    assert arm_cpu.sysfs_midrs(tmp_path) == [0x410FD0B1, 0x410FD0B1, 0x410FD050]
    assert arm_cpu.model_name(arm_cpu.sysfs_midrs(tmp_path)) == "Cortex-A76 ×2 + Cortex-A55 ×1"


def _as_arm(monkeypatch, cpuinfo: str, hwcaps: tuple[int, int], mrs: int | None = None, sysfs=(),
            exe="/usr/bin/python3.11", kernel="aarch64"):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(environment, "_real_executable", lambda: exe)
    monkeypatch.setattr(environment, "_read", lambda path: kernel if path == "/proc/sys/kernel/arch" else "")
    monkeypatch.setattr(environment, "_cpuinfo_text", lambda: cpuinfo)
    monkeypatch.setattr(arm_cpu, "auxv_hwcaps", lambda: hwcaps)
    monkeypatch.setattr(arm_cpu, "sysfs_midrs", lambda: list(sysfs))
    monkeypatch.setattr(arm_cpu, "mrs_midr", lambda: mrs)
    return environment.describe()


def test_under_user_mode_emulation_the_hosts_cpuinfo_is_not_the_cpu(monkeypatch):
    """What qemu-aarch64 7.2 -cpu cortex-a72 on an EPYC shows: the host's /proc/cpuinfo, the guest's auxv and MIDR
    (an older kernel: no /proc/sys/kernel/arch; the thread's executable not readable)."""
    env = _as_arm(monkeypatch, X86_CPUINFO, (HWCAP_A72, 0), mrs=0x410FD083, exe="", kernel="")
    assert env["cpu"] == "Cortex-A72" and env["cpu_source"] == "mrs midr_el1" and env["midr"] == ["0x410fd083"]
    assert env["cpu_flags"] == ["asimd"] and env["int8_dot_product"] == "neon"
    assert env["emulated"] is True and "aarch64 code under an x86_64 kernel" in env["emulation"]
    # qemu 8+ writes an Arm /proc/cpuinfo: the kernel's architecture, or the emulator as the real executable, tell
    env = _as_arm(monkeypatch, PI4_CPUINFO, (HWCAP_A72, 0), exe="", kernel="x86_64")
    assert (env["cpu"], env["emulation"]) == ("Cortex-A72", "user-mode emulation: aarch64 code under an x86_64 kernel")
    env = _as_arm(monkeypatch, PI4_CPUINFO, (HWCAP_A72, 0), exe="/usr/bin/qemu-aarch64-static", kernel="")
    assert env["emulation"] == ("user-mode emulation: this process runs under qemu-aarch64-static "
                                "(/usr/bin/qemu-aarch64-static)")


def test_an_emulating_arm_hosts_sysfs_is_not_the_emulated_cpu(monkeypatch):
    """qemu-aarch64 -cpu cortex-a72 on a Neoverse server with /sys mounted: sysfs names the host, not the guest."""
    env = _as_arm(monkeypatch, PI4_CPUINFO, (HWCAP_A72, 0), sysfs=[0x414FD0C1] * 64, exe="/usr/bin/qemu-aarch64")
    assert (env["cpu"], env["cpu_source"], env["emulated"]) == ("Cortex-A72", "/proc/cpuinfo", True)


def test_a_32_bit_userland_on_a_64_bit_kernel_is_not_read_as_aarch64(monkeypatch):
    """Raspberry Pi OS 32-bit: uname says aarch64, the auxiliary vector holds 32-bit Arm hwcaps (LPAE at bit 20 would
    read as asimddp)."""
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(environment.struct, "calcsize", lambda fmt: 4)
    assert environment.is_arm() is False
    monkeypatch.setattr(environment.struct, "calcsize", lambda fmt: 8)
    assert environment.is_arm() is True


def test_on_a_board_the_model_comes_from_sysfs_or_cpuinfo(monkeypatch):
    env = _as_arm(monkeypatch, PI4_CPUINFO, (HWCAP_A72, 0), sysfs=[0x410FD083] * 4)
    assert (env["cpu"], env["cpu_source"], env["emulated"]) == ("Cortex-A72", "sysfs midr_el1", False)
    assert "emulation" not in env
    env = _as_arm(monkeypatch, PI4_CPUINFO, (HWCAP_A76, 0))
    assert (env["cpu"], env["cpu_source"], env["int8_dot_product"]) == ("Cortex-A72", "/proc/cpuinfo", "dotprod")
    env = _as_arm(monkeypatch, "", (HWCAP_A72 & ~arm_cpu.HWCAP_CPUID, 0), mrs=0x410FD083)
    assert env["cpu"] == "Arm (model not reported)" and env["cpu_source"] is None  # no cpuid: mrs not tried


# "Cortex-A72/neon": set by make test-arm64 when it runs these tests inside the arm64 root on an emulated CPU
EXPECTED_CPU = os.environ.get("UNET_EXPECT_CPU")


@pytest.mark.skipif(not EXPECTED_CPU, reason="make test-arm64 runs it on emulated Arm CPUs")
def test_the_emulated_arm_cpu_is_named_as_qemu_runs_it():
    env = environment.describe()
    assert f"{env['cpu']}/{env['int8_dot_product']}" == EXPECTED_CPU, env
    assert env["emulated"] is True and "qemu-aarch64" in env["emulation"]
    assert "avx2" not in env["cpu_flags"] and env["machine"] == "aarch64"
    assert arm_cpu.midr_name(arm_cpu.mrs_midr()) == env["cpu"]  # the register itself, read with mrs


@pytest.mark.skipif(bool(EXPECTED_CPU) or "qemu" in Path(environment._real_executable()).name,
                    reason="this machine is emulated on purpose (make test-arm64, make test-avx2)")
def test_this_machine_is_not_called_emulated():
    env = environment.describe()
    assert env["emulated"] is False, env.get("emulation")
    if platform.machine() == "x86_64":
        assert env["int8_dot_product"] in ("vnni", "vpmaddubsw") and "midr" not in env


@pytest.fixture
def emulated_bench() -> BenchResult:
    row = {"artifact": "unet_int8.tflite", "format": "tflite", "precision": "int8", "runtime": "litert",
           "runtime_version": "2.3.0", "device": "cpu", "threads": 2, "batch_size": 1, "status": "ok",
           "reason": None, "size_bytes": 2_000_000, "cold_start_ms": 900.0,
           "latency_ms": {"p50": 10234.5, "p90": 10400.0, "p99": 10500.0, "mean": 10250.0, "std": 40.0,
                          "min": 10100.0, "max": 10600.0, "n": 3},
           "throughput_fps": 0.098, "peak_rss_mb": 300.0, "providers": [], "inference_precision": None,
           "export_agreement": 0.9855,
           "accuracy": {"pixel_accuracy": 0.9, "miou": 0.58, "per_class_iou": [0.58],
                        "agreement_vs_reference": 0.9, "max_abs_logit_error": 1.2}}
    env = {"cpu": "Cortex-A72", "int8_dot_product": "neon", "cpu_flags": ["asimd"], "emulated": True,
           "emulation": "user-mode emulation: aarch64 code under an x86_64 kernel (/proc/cpuinfo is the host's)",
           "label": "a72"}
    return BenchResult.from_dict({"environment": env, "results": [row]})


def test_an_emulated_bench_shows_accuracy_not_latency(emulated_bench):
    rows = list(emulated_bench.rows)
    text = tables.terminal_table(rows, environment=emulated_bench.environment)
    assert "p50 ms" not in text and "10234" not in text and "0.5800" in text and "90.00%" in text
    assert "emulated: user-mode emulation" in text and "latency not shown" in text
    assert "on this CPU (Cortex-A72, neon int8 dot product)" in text  # 90% vs 98.55% at export: flagged
    markdown = tables.to_markdown(emulated_bench)
    assert "p50 ms" not in markdown and "- emulated: user-mode emulation" in markdown
    assert "p50 ms" in tables.terminal_table(rows)  # the same rows measured natively keep their latency


def test_compare_keeps_an_emulated_runs_accuracy_and_drops_its_latency(emulated_bench):
    native = BenchResult.from_dict({**emulated_bench.to_dict(), "environment": {"label": "x86", "emulated": False}})
    native_row = native.rows[0]
    result = comparison([("a72.json", emulated_bench), ("x86.json", native)])
    assert result.baseline_label == "x86" and result.baseline_row == native_row  # a measured run is the baseline
    assert ("a72", ("unet_int8.tflite", "litert", "cpu")) not in result.ratios
    text = render(result)
    line = next(x for x in text.splitlines() if x.startswith("| unet_int8.tflite"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:7] == ["emulated", "2t×1b", "0.5800", "-"] and cells[7] == "10234" and cells[10] == "1.00x"
    assert "Emulated (no latency" in text


def test_openvino_on_aarch64_without_sysfs_is_a_skipped_row_not_a_crash(monkeypatch, tmp_path):
    """OpenVINO 2026.4's CPU plugin dies with SIGSEGV on aarch64 when /sys is not mounted (seen under qemu-user in
    a chroot; x86 runs without it): the row says so instead of 'worker exited with code -11'."""
    from exporter.runtimes import RUNTIMES
    from exporter.runtimes.base import module_missing

    if module_missing("openvino"):
        pytest.skip("openvino is not installed")
    openvino = RUNTIMES["openvino"]
    monkeypatch.setattr(openvino, "SYSFS_CPU", tmp_path / "absent")
    assert openvino.available() is None or platform.machine() != "x86_64"  # x86: no sysfs needed
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert "crashes on aarch64 without" in openvino.available() and "mount -t sysfs" in openvino.available()
    monkeypatch.setattr(openvino, "SYSFS_CPU", tmp_path)
    assert openvino.available() is None
