"""Issue 24: the web rows beside the native rows of the same run, on a run's files (default: the demo's).

Usage: python benchmarks/web.py [RUN_DIR] [OUT_DIR]

1. CPU: ``unet-bench run RUN/unet.pack --runtimes litert,onnxruntime,openvino,web --devices cpu --threads 2``: every
   file on the native runtimes and on LiteRT.js / onnxruntime-web (WebAssembly) and MediaPipe's web ImageSegmenter
   (CPU delegate), in one run, on the pack's evaluation frames.
2. GPU: the web runtimes on ``--devices gpu`` (WebGPU; MediaPipe's GPU delegate) on a pack of 8 frames: without a
   GPU, Chromium's WebGPU is SwiftShader (seconds a frame), so these rows check answers, not speed.
3. ``unet-export webapp RUN --check`` for LiteRT.js and MediaPipe: the page's class map on the demo frame.

Writes OUT_DIR (default artifacts/web) cpu.json, gpu.json, web.md (the tables for RESULTS.md) and the screenshots.
Run it alone: the browser, the native runtimes and anything else share the cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def sh(*args: str) -> str:
    print("+", " ".join(args), flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def table(bench: dict, latency: bool = True) -> list[str]:
    head = "| file | runtime | device | backend | p50 ms | agreement | at export | status |"
    lines = [head, "|---|---|---|---|---:|---:|---:|---|"]
    for r in bench["results"]:
        backend = (r.get("providers") or ["-"])[0]
        agreement = (r.get("accuracy") or {}).get("agreement_vs_reference")
        p50 = (r.get("latency_ms") or {}).get("p50")
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {(r.get('reason') or '')[:110]}"
        exported = r.get("export_agreement")
        cells = [f"{p50:.1f}" if p50 is not None and latency else "-",
                 f"{agreement:.2%}" if agreement is not None else "-", f"{exported:.2%}" if exported is not None else "-"]
        lines.append(f"| {r['artifact']} | {r['runtime']} | {r['device']} | {backend} | {' | '.join(cells)} | {status} |")
    return lines


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "artifacts" / "demo").resolve()
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "artifacts" / "web").resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = str(BIN / "unet-bench")
    export = str(BIN / "unet-export")
    sh(bench, "run", str(run / "unet.pack"), "--runtimes", "litert,onnxruntime,openvino,web", "--devices", "cpu",
       "--threads", "2", "--min-runs", "20", "--min-seconds", "2", "--json", str(out / "cpu.json"))
    sh(export, "pack", str(run), "--frames", "8", "--out", str(out / "small.pack"))
    sh(bench, "run", str(out / "small.pack"), "--runtimes", "web", "--devices", "gpu", "--threads", "2",
       "--min-runs", "3", "--min-seconds", "0", "--warmup", "1", "--json", str(out / "gpu.json"))
    checks = []
    for runtime in ("litertjs", "mediapipe-web"):
        said = sh(export, "webapp", str(run), "--out", str(out / f"site-{runtime}"), "--runtime", runtime, "--check")
        checks += [f"- {runtime}: {line}" for line in said.splitlines() if line.startswith(("wrote", "checked"))]
    cpu, gpu = (json.loads((out / name).read_text()) for name in ("cpu.json", "gpu.json"))
    env = cpu["environment"]
    md = [f"Machine: {env.get('cpu')}, {env.get('cores')} cores, flags {' '.join(env.get('cpu_flags') or [])}, "
          f"int8 dot product {env.get('int8_dot_product')}; {env['web']['browser']}, Node.js {env['web']['node']}, "
          f"{', '.join(f'{k} {v}' for k, v in env['web']['packages'].items())}; {env.get('timestamp')}", "",
          "CPU (one run, 2 threads, the pack's evaluation frames):", "", *table(cpu), "",
          "GPU (WebGPU / MediaPipe GPU delegate; 8 frames; adapter: "
          f"{next((r['browser'].get('webgpu_adapter') for r in gpu['results'] if r.get('browser')), '-')}, "
          "a software rasterizer here: answers, not speed):", "", *table(gpu, latency=True), "",
          "Web app (unet-export webapp --check, the demo frame):", "", *checks, ""]
    (out / "web.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
