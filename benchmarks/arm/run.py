"""The demo's files on emulated Arm CPUs beside this x86 machine: agreement, mIoU and max |Δlogit| per artifact ×
runtime × CPU (issue: unet-bench on Arm). Accuracy only: emulated latency describes no device.

    .venv/bin/python benchmarks/arm/run.py [--run artifacts/demo] [--frames 8] [--cpus cortex-a72,neoverse-n1,...]

Needs the arm64 root (benchmarks/arm/root.sh, as root). Packs FRAMES evaluation frames of the run (fp32 costs
~25 s a frame on an emulated Cortex-A72), benches the pack natively (1 thread, one timed call: accuracy is the
point) and on each emulated CPU, and writes OUT/arm.md plus each bench's JSON. ``--reuse`` keeps JSON already there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ROOT = REPO / "artifacts/arm64/root"
BENCH = ["--threads", "1", "--warmup", "0", "--min-runs", "1", "--min-seconds", "0", "--timeout", "7200"]
RUNTIMES = "litert,onnxruntime,openvino"


def bench_native(pack: Path, out: Path, runtimes: str) -> None:
    subprocess.run([str(REPO / ".venv/bin/unet-bench"), "run", str(pack), "--label", "x86", "--json", str(out), *BENCH,
                    "--runtimes", runtimes], check=True, stdout=subprocess.DEVNULL)


def bench_emulated(cpu: str, pack: Path, out: Path, runtimes: str) -> None:
    inside = ROOT / "tmp/arm-bench"
    inside.mkdir(parents=True, exist_ok=True)
    if not (inside / pack.name).exists() or (inside / pack.name).stat().st_size != pack.stat().st_size:
        shutil.copyfile(pack, inside / pack.name)
    subprocess.run([str(HERE / "in_root.sh"), cpu, "unet-bench", "run", f"/tmp/arm-bench/{pack.name}", "--label", cpu,
                    "--json", f"/tmp/arm-bench/{cpu}.json", *BENCH, "--runtimes", runtimes],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.copyfile(inside / f"{cpu}.json", out)


def machine_line(label: str, env: dict) -> str:
    emulated = " (emulated: " + env.get("emulation", "") + ")" if env.get("emulated") else ""
    return (f"- **{label}**: {env.get('cpu')}, flags {' '.join(env.get('cpu_flags') or []) or '-'}, int8 dot product "
            f"{env.get('int8_dot_product')}{emulated}; runtimes "
            + ", ".join(f"{k} {v}" for k, v in (env.get("runtime_versions") or {}).items()))


def table(benches: dict[str, dict]) -> str:
    """One row per artifact × runtime; per machine: agreement with Keras, mIoU, max |Δlogit| (or the status)."""
    labels = list(benches)
    keys: list[tuple[str, str]] = []
    cells: dict[tuple[str, tuple], dict] = {}
    for label, bench in benches.items():
        for row in bench["results"]:
            if row["status"] == "skipped":
                continue
            key = (row["artifact"], row["runtime"])
            keys += [key] if key not in keys else []
            cells[(label, key)] = row
    lines = ["| artifact | runtime | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for key in keys:
        out = []
        for label in labels:
            row = cells.get((label, key))
            if row is None:
                out.append("-")
            elif row["status"] != "ok":
                out.append(f"**{row['status']}**")
            else:
                acc = row["accuracy"]
                logit = acc.get("max_abs_logit_error")
                out.append(f"{acc['agreement_vs_reference']:.3%} · {acc['miou']:.4f}"
                           + ("" if logit is None else f" · {logit:.3g}"))
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "artifacts/demo")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--cpus", default="cortex-a72,neoverse-n1,neoverse-v1")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts/arm64/demo")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--redo", default="", help="with --reuse: LABEL:RUNTIMES,... to bench again, e.g. "
                        "cortex-a72:openvino (those rows replace the stored ones)")
    args = parser.parse_args()
    if not (ROOT / ".complete").exists():
        print("no arm64 root: run benchmarks/arm/root.sh first (as root)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    pack = args.out / f"demo{args.frames}.pack"
    if not pack.exists():
        subprocess.run([str(REPO / ".venv/bin/unet-export"), "pack", str(args.run), "--frames", str(args.frames),
                        "--out", str(pack)], check=True, stdout=subprocess.DEVNULL)
    benches: dict[str, dict] = {}
    redo = dict(item.split(":", 1) for item in args.redo.split(";") if item)
    for label in ["x86", *args.cpus.split(",")]:
        path = args.out / f"{label}.json"
        runtimes = redo.get(label, RUNTIMES)
        if not (args.reuse and path.exists()) or label in redo:
            fresh = path.with_suffix(".fresh.json")
            start = time.monotonic()
            bench_native(pack, fresh, runtimes) if label == "x86" else bench_emulated(label, pack, fresh, runtimes)
            print(f"{label} ({runtimes}): {time.monotonic() - start:.0f} s", flush=True)
            new = json.loads(fresh.read_text())
            if label in redo and path.exists():  # the rows benched again replace the stored ones
                old = json.loads(path.read_text())
                again = set(runtimes.split(","))
                new["results"] = [r for r in old["results"] if r["runtime"] not in again] + new["results"]
            path.write_text(json.dumps(new, indent=1))
            fresh.unlink()
        benches[label] = json.loads(path.read_text())
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    text = "\n".join([
        f"# The demo's files on Arm ({args.frames} evaluation frames; {qemu}; "
        f"{time.strftime('%Y-%m-%d', time.gmtime())})", "",
        *(machine_line(label, bench["environment"]) for label, bench in benches.items()), "",
        "Cells: agreement with the Keras class maps · mIoU · max |Δlogit| (none for class-map files). "
        "No latency: the Arm rows ran under user-mode emulation.", "", table(benches), ""])
    (args.out / "arm.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
