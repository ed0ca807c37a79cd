"""TensorFlow's start-up notices are held back; one line says which devices it runs on; real errors pass."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_filtered_stderr_drops_the_notices_and_keeps_the_rest():
    code = (
        "import os, sys\n"
        "from exporter.stdio import filtered_stderr\n"
        "with filtered_stderr():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "    os.write(2, b'E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\\n')\n"
        "    os.write(2, b'a real problem\\n')\n"
        "    print('from python', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["a real problem", "from python", "after"]


def test_tensorflow_import_is_quiet_and_says_its_devices():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # even without the env setting
    code = "from exporter.stdio import announce; announce(print); announce(print)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("TensorFlow ") and " runs on " in lines[0]  # once a process
    for noise in ("cuInit", "absl::InitializeLog", "cuda", "oneDNN", "cpu_feature_guard"):
        assert noise not in proc.stderr, proc.stderr
