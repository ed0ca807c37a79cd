#!/usr/bin/env bash
# An emulated arm64 device for make test-arm64 and benchmarks/arm: a Debian 12 arm64 root (debootstrap, cached),
# qemu-user from the distribution registered with binfmt_misc (so every process the bench starts inside the root is
# emulated too; the CPU is chosen per run with QEMU_CPU), and the device side of this checkout installed in a venv
# there from a wheelhouse made on the host: the project's wheel + aarch64 wheels of numpy, click, the three
# runtimes and pytest, at the host's pinned versions (constraints/host.txt). Nothing is downloaded inside the root.
#
#   benchmarks/arm/root.sh [ROOT]      (default artifacts/arm64/root; needs root privileges)
#   SUITE=trixie benchmarks/arm/root.sh artifacts/arm64/trixie      (Debian 13: Python 3.13; default bookworm: 3.11)
#
# qemu: Debian 12's qemu 7.2 runs OpenVINO but kills every LiteRT and ONNX Runtime worker (SIGSEGV); 10.0 from
# bookworm-backports runs them all (8 and 9 are accepted, not tried):  apt-get install -t bookworm-backports qemu-user-static debootstrap
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${1:-artifacts/arm64/root}
SUITE=${SUITE:-bookworm}
PY=${PYTHON:-.venv/bin/python}
say() { echo "arm64-root: $*" >&2; }
die() { say "$*"; exit 2; }

command -v qemu-aarch64-static >/dev/null || die "needs qemu-user-static 8 or newer: apt-get install -t bookworm-backports qemu-user-static debootstrap"
command -v debootstrap >/dev/null || die "needs debootstrap: apt-get install debootstrap"
qemu_major=$(qemu-aarch64-static --version | sed -n 's/^qemu-aarch64 version \([0-9]*\).*/\1/p')
[ "${qemu_major:-0}" -ge 8 ] || die "qemu-aarch64 $(qemu-aarch64-static --version | head -1 | cut -d' ' -f3) crashes LiteRT and ONNX Runtime; install 10.x: apt-get install -t bookworm-backports qemu-user-static"

# binfmt_misc: arm64 ELF files run through qemu, with F (the emulator is opened now, so it works inside a chroot).
# An entry someone else registered is kept only if it is enabled, has F and its emulator is 8 or newer.
entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
  || die "cannot mount binfmt_misc (needs root privileges)"
if [ -e "$entry" ]; then
  interp=$(sed -n 's/^interpreter //p' "$entry")
  # the -P wrapper takes its first argument as argv[0]: ask the emulator it links to
  major=$("$(readlink -f "$interp")" --version 2>/dev/null | sed -n 's/^qemu-aarch64 version \([0-9]*\).*/\1/p' || true)
  if ! grep -qx enabled "$entry" || ! grep -q '^flags: .*F' "$entry" || [ "${major:-0}" -lt 8 ]; then
    say "replacing the qemu-aarch64 binfmt entry ($interp, version ${major:-?}, flags $(sed -n 's/^flags: //p' "$entry"))"
    echo -1 > "$entry"
  fi
fi
if [ ! -e "$entry" ]; then
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -f "$conf" ] || die "$conf missing: reinstall qemu-user-static"
  cat "$conf" > /proc/sys/fs/binfmt_misc/register || die "cannot register qemu-aarch64 with binfmt_misc"
  say "registered $(sed -n 's/^interpreter //p' "$entry") for arm64 programs"
fi

# Nothing may stay mounted under a root this script deletes (debootstrap mounts /proc and /sys there, and a killed
# run leaves them): rm -rf would go into the host's. Refuse instead; --one-file-system as a second guard.
safe_rm() {
  local target; target=$(realpath -m "$1")
  if findmnt -rn -o TARGET | grep -q "^$target\(/\|$\)"; then
    die "something is still mounted under $target (findmnt | grep $target): umount it first"
  fi
  rm -rf --one-file-system "$target"
}

if [ -f "$ROOT/.complete" ] && [ "$(cat "$ROOT/.complete")" != "$SUITE" ]; then
  die "$ROOT holds Debian $(cat "$ROOT/.complete"), not $SUITE: name another folder (or delete that one)"
fi
if [ ! -f "$ROOT/.complete" ]; then
  say "building a Debian $SUITE arm64 root in $ROOT (once; ~10 min)"
  safe_rm "$ROOT.tmp"; mkdir -p "$(dirname "$ROOT")"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOT.tmp" http://deb.debian.org/debian >"$ROOT.log" 2>&1 || die "debootstrap failed: see $ROOT.log"
  safe_rm "$ROOT"; mv "$ROOT.tmp" "$ROOT"; echo "$SUITE" > "$ROOT/.complete"
fi

# The wheelhouse: the device side's dependencies for the root's Python, then this checkout's wheel (always fresh).
pyver=$(ARM64_ROOT="$ROOT" benchmarks/arm/in_root.sh max /usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
house="$ROOT/wheels"; mkdir -p "$house"
deps="numpy click ai-edge-litert onnxruntime openvino pytest"
stamp="$house/.deps-$(cat constraints/host.txt | sha256sum | cut -c1-16)-cp$pyver"
if [ ! -f "$stamp" ]; then
  say "downloading aarch64 wheels for Python $pyver: $deps"
  # shellcheck disable=SC2086
  $PY -m pip download --quiet --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_36_aarch64 --platform manylinux_2_35_aarch64 --platform manylinux_2_34_aarch64 \
    --platform manylinux_2_31_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
    --platform manylinux2014_aarch64 -c constraints/host.txt -d "$house" $deps
  touch "$stamp"
fi
rm -f "$house"/unet_export-*.whl
# from a copy of what the wheel holds: setuptools would otherwise walk artifacts/ (this root, its /proc included)
src=$(mktemp -d); trap 'rm -rf "$src"' EXIT
cp -r pyproject.toml README.md exporter "$src"/
find "$src" -name __pycache__ -prune -exec rm -rf {} +
$PY -m pip wheel --quiet --no-deps --no-build-isolation -w "$(realpath "$house")" "$src" >/dev/null
wheel=$(basename "$house"/unet_export-*.whl)

venv=/opt/unet-bench
in_root() { ARM64_ROOT="$ROOT" benchmarks/arm/in_root.sh max "$@"; }
if [ ! -f "$ROOT$venv/$(basename "$stamp")" ]; then
  say "installing the device side in $venv (emulated; a few minutes)"
  safe_rm "${ROOT:?}$venv"
  in_root /usr/bin/python3 -m venv "$venv"
  in_root pip install --quiet --no-index --find-links /wheels \
    "/wheels/$wheel[litert,onnxruntime,openvino]" pytest
  touch "$ROOT$venv/$(basename "$stamp")"
fi
in_root pip install --quiet --no-index --no-deps --force-reinstall "/wheels/$wheel"
say "ready: chroot $ROOT $venv/bin/unet-bench (qemu $(qemu-aarch64-static --version | head -1 | cut -d' ' -f3); QEMU_CPU picks the CPU)"
