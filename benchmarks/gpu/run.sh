#!/usr/bin/env bash
# The GPU check, run ON the GPU machine (Python 3.12, x86_64, JAX with CUDA, numpy, onnxruntime; no TensorFlow,
# no Keras, nothing downloadable). Prepare its folder here with benchmarks/gpu/fetch.sh, then, in the repo root:
#
#     benchmarks/gpu/run.sh .gpu/call1        # LiteRT (WebGPU) and ONNX Runtime (WebGPU plugin) rows
#     benchmarks/gpu/run.sh .gpu/call2        # Keras on JAX (CUDA) and ONNX Runtime rows, JAX training
#
# Each folder is self-sufficient (< 64 MiB): wheels, site.tar.xz (trimmed binary packages), the Vulkan loader
# .deb, one pack, and optionally TRAIN (run benchmarks/gpu/train_jax.py too). It installs into /tmp/site,
# runs the gpu tests on the pack, then `unet-bench run --devices cpu,gpu`, and writes to $OUT (default
# ./gpu-out): env.txt, gpu_tests.txt, bench_<pack>.json/.md, train_jax.json. Budget: well under 10 minutes.
set -uo pipefail
DIR=${1:?usage: benchmarks/gpu/run.sh FOLDER}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
started=$(date +%s)
say() { echo "[$(( $(date +%s) - started ))s] $*"; }

say "installing from $DIR"
for deb in "$DIR"/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /; done
ldconfig 2>/dev/null
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
mkdir -p /tmp/site
[ -f "$DIR/site.tar.xz" ] && tar xJf "$DIR/site.tar.xz" -C /tmp/site
ls "$DIR"/*.whl >/dev/null 2>&1 && $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site "$DIR"/*.whl
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

{
  say "machine"
  nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  lscpu | grep -E "Model name|^CPU\(s\)"; grep -o -w -E "avx512f|avx512_vnni|avx2" /proc/cpuinfo | sort | uniq -c
  ldconfig -p | grep -E "libvulkan|libcuda\.so" ; echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}"
  $PY - <<'EOF'
import importlib, importlib.metadata as md, platform
print("python", platform.python_version())
for name in ("numpy", "jax", "jaxlib", "keras", "onnxruntime", "onnxruntime-ep-webgpu", "ai-edge-litert",
             "tensorflow", "openvino"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
import jax
print("jax devices", jax.devices())
import onnxruntime as ort
print("ort providers", ort.get_available_providers())
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

for pack in "$DIR"/*.pack; do
  name=$(basename "$pack" .pack)
  say "gpu tests on $name"
  UNET_GPU_PACK=$pack timeout 240 $PY -m pytest -q -m gpu tests/test_gpu.py -rA -s -p no:cacheprovider \
      >> "$OUT/gpu_tests.txt" 2>&1
  grep -E "GPU ROUTE|passed|failed|skipped|SKIPPED|FAILED|Error" "$OUT/gpu_tests.txt" | tail -20
  say "unet-bench on $name"
  timeout 300 $PY -m exporter.cli.bench run "$pack" --devices cpu,gpu --batch-sizes 1,8 --min-runs 20 \
      --min-seconds 1 --json "$OUT/bench_$name.json" --markdown "$OUT/bench_$name.md" 2>&1 | grep -v "^INFO\|^WARNING"
done

if [ -e "$DIR/TRAIN" ]; then
  say "JAX training throughput"
  KERAS_BACKEND=jax timeout 240 $PY benchmarks/gpu/train_jax.py --out "$OUT/train_jax.json" ${TRAIN_ARGS:---frames 512 --epochs 2 --batch-sizes 32} 2>&1 \
      | grep -v "^WARNING\|^I0000\|^W0000"
fi
say "done"
