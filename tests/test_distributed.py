"""Data-parallel training on Keras' JAX backend: two worker processes on this machine (loopback only) train
one model together and leave one valid run folder; one worker with the same seed and global batch trains
the same model. Real processes, real JAX collectives (gloo), nothing mocked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from exporter.distributed import Distribution
from exporter.errors import UserError

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(__import__("importlib").util.find_spec("jax") is None, reason="jax is not installed")]

TRAIN = ["--epochs", "1", "--batch-size", "8", "--n-filters", "2", "--input-size", "32", "32", "--val-split", "0.2",
         "--strategy", "data-parallel"]
CLI = "from exporter.cli.main import cli; cli()"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data, run, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-c", CLI, "train", "--data", str(data), "--out", str(run), *TRAIN,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _workers(data, run, *extra):
    port = _free_port()
    procs = [_start(data, run, "--workers", "2", "--worker-index", str(i), "--coordinator", f"127.0.0.1:{port}",
                    *extra) for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out[-2000:] + err[-3000:]
    return [out for out, _ in outs]


def _history(run):
    return json.loads((run / "checkpoint" / "state.json").read_text())["history"]


@pytest.mark.skipif(not os.environ.get("UNET_DISTRIBUTED"), reason="five JAX training processes (~5 min on 2 cores): "
                    "make test-distributed (UNET_DISTRIBUTED=1)")
def test_two_workers_train_like_one_survive_a_kill_and_resume_together(tmp_path, blocks_dir):
    import keras

    one = tmp_path / "one"
    proc = _start(blocks_dir, one)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    assert "data-parallel over 1 " in out

    # two workers; worker 1 is killed once two epochs are committed: the chief stops at once with one line,
    # the run keeps its last committed epoch
    two = tmp_path / "two"
    port = _free_port()
    procs = [_start(blocks_dir, two, "--epochs", "50", "--workers", "2", "--worker-index", str(i),
                    "--coordinator", f"127.0.0.1:{port}") for i in (0, 1)]
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and procs[0].poll() is None and \
            len(_history(two) if (two / "checkpoint" / "state.json").exists() else []) < 2:
        time.sleep(0.2)
    procs[1].kill()
    chief, err = procs[0].communicate(timeout=120)
    procs[1].communicate(timeout=60)
    assert procs[0].returncode == 2, chief[-2000:] + err[-3000:]
    assert "data-parallel over 2 " in chief and "in 2 process(es)" in chief and "(chief" in chief
    assert "another worker stopped" in err and "restart every worker with --resume" in err
    committed = len(_history(two))
    assert committed >= 2

    # same seed, same global batch of 8 (4 per worker): the same first epoch, to float summation order
    a, b = _history(one)[0], _history(two)[0]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3) and b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3)
    assert abs(b["val_miou"] - a["val_miou"]) < 0.01
    print(f"\none worker: val mIoU {a['val_miou']:.4f} loss {a['val_loss']:.4f}; "
          f"two workers: val mIoU {b['val_miou']:.4f} loss {b['val_loss']:.4f}")

    # both restarted with --resume: one more epoch together, then one run folder, written by the chief alone
    chief, worker = _workers(blocks_dir, two, "--epochs", str(committed + 1), "--resume")
    assert f"resuming {two} after epoch {committed}" in chief and "written by worker 0" in worker
    assert [row["epoch"] for row in _history(two)] == list(range(1, committed + 2))
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    model = keras.saving.load_model(two / "model.keras", compile=False)
    assert model.count_params() == keras.saving.load_model(one / "model.keras", compile=False).count_params()


def test_distribution_options_are_checked(monkeypatch):
    with pytest.raises(UserError, match="--coordinator"):
        Distribution("data-parallel", workers=2, worker_index=1)
    with pytest.raises(UserError, match="--worker-index"):
        Distribution("data-parallel", workers=2, worker_index=2, coordinator="127.0.0.1:1")
    with pytest.raises(UserError, match="needs --strategy data-parallel"):
        Distribution("none", workers=2, coordinator="127.0.0.1:1")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "3")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "10.0.0.1:1234,10.0.0.2:1234")
    d = Distribution.from_environment("data-parallel")
    assert (d.workers, d.worker_index, d.coordinator, d.chief) == (3, 2, "10.0.0.1:1234", False)
