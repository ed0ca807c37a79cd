#!/usr/bin/env bash
# Run a command on an emulated Arm CPU inside the arm64 root that root.sh made:
#
#   benchmarks/arm/in_root.sh CPU COMMAND...     (CPU: a qemu CPU name: cortex-a72, neoverse-n1, neoverse-v1, max)
#
# In a private mount namespace (unshare), so /proc and /dev/shm are mounted for the command only and never stay
# mounted under artifacts/ (where an rm -rf would reach the host's). A clean environment: the host's PIP_*,
# paths and PYTHON* mean nothing inside. The device side's venv (/opt/unet-bench) is first on PATH.
set -euo pipefail
ROOT=${ARM64_ROOT:-$(dirname "$0")/../../artifacts/arm64/root}
[ $# -ge 2 ] || { echo "usage: $0 CPU COMMAND..." >&2; exit 2; }
[ -f "$ROOT/.complete" ] || { echo "in_root: no arm64 root at $ROOT: run benchmarks/arm/root.sh" >&2; exit 2; }
cpu=$1; shift
exec unshare --mount --propagation private -- /bin/sh -c '
  root=$1; cpu=$2; shift 2
  mount -t proc proc "$root/proc" && mount -t sysfs sysfs "$root/sys" && mount -t tmpfs tmpfs "$root/dev/shm" || exit 2
  exec chroot "$root" /usr/bin/env -i QEMU_CPU="$cpu" PATH=/opt/unet-bench/bin:/usr/local/bin:/usr/bin:/bin \
    HOME=/root LANG=C.UTF-8 TZ=UTC "$@"' in_root "$ROOT" "$cpu" "$@"
