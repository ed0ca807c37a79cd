import csv
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from exporter.cli.main import cli
from exporter.errors import UserError
from exporter.train import TrainConfig, train

TINY = TrainConfig(epochs=1, batch_size=8, n_filters=2, input_size=(32, 32), val_split=0.25, seed=0)


def test_tiny_run_writes_everything_and_learns(tiny_run):
    for name in ("model.keras", "config.json", "history.csv", "training_curves.png"):
        assert (tiny_run / name).stat().st_size > 0
    history = list(csv.DictReader((tiny_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == list(range(1, 13))
    assert float(history[-1]["loss"]) < float(history[0]["loss"]) / 3
    assert max(float(r["val_pixel_accuracy"]) for r in history) > 0.8  # it really learns
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["input_size"] == [32, 32] and len(config["class_names"]) == 23
    assert config["data_dir"].startswith("/")  # absolute: export and pack find the data from any folder
    assert len(config["val_stems"]) == 24


def test_resume_continues_from_the_last_completed_epoch(tmp_path, synth_dir):
    run = tmp_path / "run"
    first = train(synth_dir, run, TINY, log=None, verbose=0)
    assert [r["epoch"] for r in first.history] == [1]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["last_checkpoint"] == "epoch_0001.keras"

    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--data", str(synth_dir), "--out", str(run), "--epochs", "2",
                                 "--batch-size", "8", "--n-filters", "2", "--input-size", "32", "32",
                                 "--val-split", "0.25", "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "epoch 2/2" in result.output and "epoch 1/2" not in result.output
    history = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert float(history[0]["loss"]) == pytest.approx(first.history[0]["loss"], rel=1e-5)
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and state["last_checkpoint"] == "epoch_0002.keras"
    kept = {p.name for p in (run / "checkpoint").iterdir()}
    assert kept == {"state.json", "epoch_0002.keras", state["best_checkpoint"]}  # older epochs are cleaned up


def test_resumed_optimizer_state_is_kept(tmp_path, synth_dir):
    run = tmp_path / "run"
    train(synth_dir, run, TINY, log=None, verbose=0)
    import keras

    model = keras.saving.load_model(run / "checkpoint" / "epoch_0001.keras", compile=True)
    assert int(np.asarray(model.optimizer.iterations)) > 0


def test_guards(tmp_path, synth_dir):
    run = tmp_path / "run"
    with pytest.raises(UserError, match="nothing to resume"):
        train(synth_dir, run, TINY, resume=True, log=None)
    train(synth_dir, run, TINY, log=None, verbose=0)
    with pytest.raises(UserError, match="already holds a training run"):
        train(synth_dir, run, TINY, log=None, verbose=0)
    other = TrainConfig(**{**TINY.__dict__, "n_filters": 4, "epochs": 2})
    with pytest.raises(UserError, match="resume with the same options"):
        train(synth_dir, run, other, resume=True, log=None)


def test_cli_rejects_an_input_size_not_divisible_by_16(synth_dir, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--data", str(synth_dir), "--out", str(tmp_path / "r"),
                                      "--input-size", "30", "32"])
    assert result.exit_code == 2 and "divisible by 16" in result.output


def test_killed_mid_run_leaves_a_consistent_run_that_resumes(tmp_path, synth_dir):
    """SIGKILL a real training process after an epoch has committed: what is on disk agrees, and resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from exporter.fileio import sha256_file

    run = tmp_path / "run"
    args = ["--data", str(synth_dir), "--out", str(run), "--batch-size", "8", "--n-filters", "2",
            "--input-size", "32", "32", "--val-split", "0.25"]
    proc = subprocess.Popen([sys.executable, "-c", "from exporter.cli.main import cli; cli()", "train", *args, "--epochs", "200"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state_path = run / "checkpoint" / "state.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state_path.exists() and json.loads(state_path.read_text())["epoch"] >= 2:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads(state_path.read_text())
    assert 2 <= state["epoch"] < 200
    # killed anywhere: model.keras is a whole file (this epoch's best, or the previous best until resume syncs)
    assert zipfile.is_zipfile(run / "model.keras") and (run / "checkpoint" / state["last_checkpoint"]).is_file()

    result = CliRunner().invoke(cli, ["train", *args, "--epochs", str(state["epoch"] + 1), "--resume"])
    assert result.exit_code == 0, result.output
    state = json.loads(state_path.read_text())
    assert sha256_file(run / "model.keras") == sha256_file(run / "checkpoint" / state["best_checkpoint"])
    history = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == list(range(1, state["epoch"] + 1))
    config = json.loads((run / "config.json").read_text())
    assert config["n_filters"] == 2 and len(config["val_stems"]) == 10
    assert not [p.name for p in run.rglob(".*") if p.is_file()]  # no temp file of a killed save is left


def test_resume_after_the_last_commit_brings_the_run_in_line(tmp_path, synth_dir):
    """A kill after the final epoch's commit but before its sync: resume redoes no epoch, repairs the files."""
    run = tmp_path / "run"
    train(synth_dir, run, TINY, log=None, verbose=0)
    for name in ("config.json", "history.csv", "model.keras"):
        (run / name).unlink()
    (run / "checkpoint" / ".epoch_0002.keras.abc.keras").write_bytes(b"half a save")
    result = train(synth_dir, run, TINY, resume=True, log=None, verbose=0)
    assert [r["epoch"] for r in result.history] == [1]
    assert (run / "model.keras").read_bytes() == (run / "checkpoint" / "epoch_0001.keras").read_bytes()
    assert json.loads((run / "config.json").read_text())["n_filters"] == 2
    assert len(list(csv.DictReader((run / "history.csv").open()))) == 1
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch_0001.keras", "state.json"]


def test_force_forgets_the_previous_runs_checkpoints_only():
    import tempfile
    from pathlib import Path

    from exporter.train import _forget_previous_run

    checkpoints = Path(tempfile.mkdtemp())
    for name in ("state.json", "epoch_0001.keras", "epoch_0007.keras", "last.keras", "notes.txt"):
        (checkpoints / name).write_text("x")
    _forget_previous_run(checkpoints)
    assert [p.name for p in checkpoints.iterdir()] == ["notes.txt"]


def test_progress_bar_within_the_epoch_and_one_labelled_line_per_epoch(tmp_path, synth_dir, monkeypatch):
    import io

    import exporter.train as train_mod
    from exporter.train import EpochProgress

    # a terminal: one bar redrawn in place, cleared before the epoch's line
    ticks = iter([0.0, 0.5, 1.0])
    stream = io.StringIO()
    bar = EpochProgress(steps=4, epochs=3, batch_size=8, verbose=1, log=None, stream=stream,
                        clock=lambda: next(ticks))
    bar.begin(1)
    bar.step(1, 0.9)
    bar.step(2, 0.8)
    bar.end()
    text = stream.getvalue()
    assert text.count("\r") == 3 and "\n" not in text
    assert "epoch 2/3 ██████████████████████████"[:20] in text.replace("·", "█")
    assert "2/4 steps  train loss 0.8000  16.0 frames/s  1s left" in text  # 16 frames in 1 s
    assert text.endswith("\r\033[K")

    # a log: progress lines (here as often as possible), then the epoch's line saying what is what
    monkeypatch.setattr(train_mod, "PROGRESS_LINE_SECONDS", 0.0)
    lines: list[str] = []
    train(synth_dir, tmp_path / "run", TINY, log=lines.append, verbose=2)
    progress = [line for line in lines if "steps" in line]
    epoch = [line for line in lines if line.startswith("epoch 1/1  train:")]
    assert progress and all(line.startswith("epoch 1/1 ") and "frames/s" in line for line in progress)
    assert len(epoch) == 1 and "|  validation: loss " in epoch[0] and ", mIoU " in epoch[0]
    assert lines.index(epoch[0]) > lines.index(progress[-1])


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from exporter.train import learning_rate_schedule

    assert learning_rate_schedule(TINY, 10) == TINY.learning_rate  # constant: a plain float
    config = TrainConfig(epochs=4, learning_rate=3e-3, lr_schedule="cosine", warmup_epochs=0.5)
    schedule = learning_rate_schedule(config, steps_per_epoch=10)  # 40 steps, 5 of warm-up
    rates = [float(schedule(step)) for step in (0, 5, 20, 39, 40)]
    assert rates[0] == pytest.approx(3e-4) and rates[1] == pytest.approx(3e-3)
    assert rates[1] > rates[2] > rates[3] > 0 and rates[4] == pytest.approx(0, abs=1e-9)
    with pytest.raises(UserError, match="--lr-schedule"):
        TrainConfig(lr_schedule="step")


def test_training_stops_at_the_target_miou_and_resume_accepts_older_states(tmp_path, synth_dir):
    from dataclasses import replace

    config = replace(TINY, epochs=3, target_miou=0.01)
    lines: list[str] = []
    result = train(synth_dir, tmp_path / "run", config, log=lines.append, verbose=0)
    assert [r["epoch"] for r in result.history] == [1] and "reached --target-miou 0.01" in result.stopped
    assert any(line.startswith("stopping after epoch 1: validation mIoU") for line in lines)
    # a state written before the schedule options existed resumes as the constant schedule it was
    state_path = tmp_path / "run" / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    for name in ("lr_schedule", "warmup_epochs", "jit_compile"):
        del state["config"][name]
    state_path.write_text(json.dumps(state))
    again = train(synth_dir, tmp_path / "run", replace(TINY, epochs=2), resume=True, log=None, verbose=0)
    assert [r["epoch"] for r in again.history] == [1, 2] and again.stopped is None
    assert not replace(TINY, lr_schedule="cosine").same_run(state["config"])


def test_time_budget_stops_before_an_epoch_that_would_not_fit(tmp_path, synth_dir):
    from dataclasses import replace

    result = train(synth_dir, tmp_path / "run", replace(TINY, epochs=5, time_budget=0.001), log=None, verbose=0)
    assert len(result.history) == 1 and result.stopped.startswith("--time-budget 0.001s")


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_reports_and_exports_float32(tmp_path, synth_dir, precision):
    from dataclasses import replace

    import keras

    from exporter.export.api import ExportContext

    run = tmp_path / "run"
    result = train(synth_dir, run, replace(TINY, precision=precision), log=None, verbose=0)
    assert np.isfinite(result.history[0]["loss"]) and np.isfinite(result.best_val_miou)
    assert json.loads((run / "config.json").read_text())["precision"] == precision
    model = keras.saving.load_model(run / "model.keras", compile=False)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers if layer.weights}
    head = model.layers[-1].name
    assert policies.pop(head) == "float32" and set(policies.values()) == {precision}  # logits stay float32
    assert keras.mixed_precision.global_policy().name == "float32"  # nothing else in the process inherits it
    context = ExportContext.open(run / "model.keras", synth_dir, validation_samples=4, log=None)
    assert all(layer.dtype_policy.name == "float32" for layer in context.model.layers)
    assert context.reference_logits.dtype == np.float32
    assert TrainConfig(precision="float32").same_run(TrainConfig().identity())
    with pytest.raises(UserError, match="--precision"):
        TrainConfig(precision="float8")
