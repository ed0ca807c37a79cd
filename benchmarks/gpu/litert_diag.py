"""Compile a .tflite for LiteRT's GPU accelerator and show everything LiteRT says (for a route that fails).

    python benchmarks/gpu/litert_diag.py MODEL.tflite
"""
import sys

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel, CpuOptions, GpuOptions, HardwareAccelerator, Options

for name, accel in (("GPU", HardwareAccelerator.GPU), ("GPU|CPU", HardwareAccelerator.GPU | HardwareAccelerator.CPU)):
    try:
        model = CompiledModel.from_file(sys.argv[1], options=Options(
            hardware_accelerators=accel, cpu_options=CpuOptions(num_threads=4), gpu_options=GpuOptions()))
        print(name, "compiled; fully accelerated:", model.is_fully_accelerated(), flush=True)
        ins, outs = model.create_input_buffers(0), model.create_output_buffers(0)
        ins[0].write(np.zeros((1, 96, 128, 3), np.float32))
        model.run_by_index(0, ins, outs)
        import time
        times = []
        for _ in range(50):
            started = time.perf_counter()
            model.run_by_index(0, ins, outs)
            outs[0].read(96 * 128 * 23, np.float32)
            times.append((time.perf_counter() - started) * 1000)
        print(name, f"ran: p50 {np.median(times):.2f} ms over 50 runs", flush=True)
    except Exception as exc:  # noqa: BLE001 - a diagnostic: print whatever it is
        print(name, "failed:", type(exc).__name__, exc, flush=True)
