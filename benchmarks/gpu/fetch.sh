#!/usr/bin/env bash
# Prepare the GPU check's two folders (.gpu/call1, .gpu/call2), here, on a host with the package registries:
#
#     benchmarks/gpu/fetch.sh artifacts/demo       # a run folder of the demo model (make demo)
#
# The GPU machine is Python 3.12, x86_64, with JAX (CUDA), numpy and onnxruntime but no TensorFlow or Keras,
# and downloads nothing; each call may send 64 MiB. So each folder carries only what its half needs:
#   call1: LiteRT + the ONNX Runtime WebGPU plugin (binary packages trimmed and xz-packed: site.tar.xz),
#          click, the Vulkan loader (.deb), and a pack of unet_fp16.tflite, the mobile int8 .tflite and
#          unet_int8_floathead.onnx (6 evaluation frames).
#   call2: Keras and its two missing pure-Python needs, the WebGPU plugin, the Vulkan loader, a pack of
#          model.keras (no optimizer state) and unet_fp16.onnx, and TRAIN (JAX training throughput).
# The run folder needs unet_fp16.tflite and unet_fp16.onnx (`unet-export pipeline --all`, or
# `unet-export tflite|onnx --model RUN/model.keras --quantize fp16`). Then see benchmarks/gpu/run.sh.
set -euo pipefail
RUN=${1:?usage: benchmarks/gpu/fetch.sh RUN_DIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GPU=$ROOT/.gpu
BIN=${BIN:-$ROOT/.venv/bin}
grep -qx '/.gpu/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >> "$ROOT/.git/info/exclude"
rm -rf "$GPU/call1" "$GPU/call2" "$GPU/stage"
mkdir -p "$GPU/whl" "$GPU/call1" "$GPU/call2" "$GPU/stage/litert" "$GPU/stage/webgpu"

# Wheels for CPython 3.12 on manylinux x86_64, no dependencies (the machine has numpy, protobuf, h5py, rich...).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$GPU/whl" \
    ai-edge-litert==2.3.0 onnxruntime-ep-webgpu==0.4.0 keras==3.15.1 namex==0.1.0 optree==0.20.0 \
    click==8.5.1

# LiteRT without its converter tools and NPU vendor plugins; the WebGPU plugin as it is. xz: ~17 MB for both.
(cd "$GPU/stage/litert" && unzip -q -o "$GPU"/whl/ai_edge_litert-*.whl && rm -rf ai_edge_litert/tools \
    ai_edge_litert/vendors ai_edge_litert/aot)
(cd "$GPU/stage/webgpu" && unzip -q -o "$GPU"/whl/onnxruntime_ep_webgpu-*.whl)
(cd "$GPU/stage" && cp -r webgpu/. litert/ && tar cJf "$GPU/call1/site.tar.xz" -C litert . \
    && tar cJf "$GPU/call2/site.tar.xz" -C webgpu .)
cp "$GPU"/whl/click-*.whl "$GPU/call1/"
cp "$GPU"/whl/keras-*.whl "$GPU"/whl/namex-*.whl "$GPU"/whl/optree-*.whl "$GPU"/whl/click-*.whl "$GPU/call2/"

# The Vulkan loader (WebGPU's Linux backend); the NVIDIA driver brings the ICD.
(cd "$GPU/stage" && apt-get download libvulkan1 >/dev/null && cp libvulkan1_*.deb "$GPU/call1/" \
    && cp libvulkan1_*.deb "$GPU/call2/")

"$BIN/unet-export" pack "$RUN" ${DATA:+--data "$DATA"} --frames 6 --out "$GPU/call1/litert_ort.pack" \
    --artifacts unet_fp16_b1.tflite,unet_int8_floathead_uint8io_argmax_b1.tflite,unet_int8_b1.tflite
"$BIN/unet-export" pack "$RUN" ${DATA:+--data "$DATA"} --frames 6 --with-keras --out "$GPU/call2/keras_onnx.pack" \
    --artifacts model.keras,unet_fp16.onnx
touch "$GPU/call2/TRAIN"
rm -rf "$GPU/stage"
du -sh "$GPU/call1" "$GPU/call2"
