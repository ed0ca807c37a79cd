"""How much of this machine's fp32 peak training and inference use.

    python benchmarks/compute_share.py --run artifacts/demo [--seconds 3]

Peak: a float32 matmul microbenchmark (2048×2048, every core, best of several calls) in numpy's BLAS,
TensorFlow and ONNX Runtime, taking the best library: what the CPU's vector units reach on dense work
(AVX-512 or AVX2/FMA, whichever it has). Model arithmetic: counted
from the seed U-Net's layers (2 FLOPs per multiply-add of each Conv2D/Conv2DTranspose; pooling, activations
and the rest are ignored, well under 1%). A training step costs about 3× a forward (forward, then the
gradients with respect to activations and to weights). Training frames/s come from the run's history.csv
(the median epoch), inference from its bench JSON (batch 1, every fp32 row).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _best(call, flop: float, seconds: float) -> float:
    call()  # warm-up
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        call()
        best = max(best, flop / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_gflops(n: int = 2048, seconds: float = 3.0) -> dict[str, float]:
    """Best float32 n×n matmul rate of each library present: numpy's BLAS, TensorFlow (oneDNN/Eigen) and
    ONNX Runtime (MLAS), every core. They differ by CPU: numpy's OpenBLAS may not know the newest one."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    flop = 2 * n**3
    rates = {"numpy": _best(lambda: a @ b, flop, seconds)}
    try:
        from exporter.stdio import import_tensorflow

        tf = import_tensorflow()
        x, y = tf.constant(a), tf.constant(b)
        rates["tensorflow"] = _best(lambda: tf.linalg.matmul(x, y).numpy(), flop, seconds)
    except ImportError:
        pass
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                                  [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rates["onnxruntime"] = _best(lambda: session.run(None, {"a": a, "b": b}), flop, seconds)
    except ImportError:
        pass
    return rates


def forward_gflop(input_size=(96, 128), n_filters: int = 32, n_classes: int = 23) -> float:
    """Convolution arithmetic of one forward, counted from the layers (``exporter.export.layers``)."""
    from exporter.export.layers import keras_layers
    from exporter.model import build_unet

    return sum(layer.flops for layer in keras_layers(build_unet((*input_size, 3), n_filters, n_classes))) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a pipeline run folder (history.csv, bench/bench.json)")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    from exporter.bench.environment import describe

    run = Path(args.run)
    rates = matmul_gflops(seconds=args.seconds)
    peak = max(rates.values())
    gflop = forward_gflop()
    with (run / "history.csv").open() as fh:
        epoch_rates = sorted(float(row["images_per_second"]) for row in csv.DictReader(fh))
    train_fps = epoch_rates[len(epoch_rates) // 2]
    env = describe(None)
    print(f"machine: {env.get('cpu')}, {env.get('cores')} cores, int8 dot product {env.get('int8_dot_product')}, "
          f"flags: {' '.join(f for f in env.get('cpu_flags', []) if f.startswith(('avx', 'fma')))}")
    print("fp32 matmul 2048², all cores: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
          + f" GFLOP/s; peak = the best, {peak:.0f} GFLOP/s")
    print(f"seed U-Net forward at 96×128: {gflop:.2f} GFLOP (convolutions)")
    train = train_fps * 3 * gflop
    print(f"training: {train_fps:.1f} frames/s × 3 × {gflop:.2f} = {train:.1f} GFLOP/s = {train / peak:.0%} of peak")
    bench = json.loads((run / "bench" / "bench.json").read_text())
    for row in bench["results"]:
        if row["status"] == "ok" and row["precision"] == "fp32" and row.get("batch_size") == 1:
            p50 = row["latency_ms"]["p50"]
            rate = gflop / (p50 / 1000)
            print(f"inference {row['artifact']} on {row['runtime']}: p50 {p50:.1f} ms = {rate:.1f} GFLOP/s "
                  f"= {rate / peak:.0%} of peak")


if __name__ == "__main__":
    main()
