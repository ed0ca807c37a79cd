"""Fuzzing what crosses machines: packs, PNG frames, and every JSON file the toolkit reads.

Each target takes a real file, damages it with a seeded random mutation, and runs the command that reads
it, in-process through click's runner. Every trial must end in exit 0, or in exit 2 with one line that
names the file: never a traceback, an exception the CLI does not map, or a file written outside the work
folder (hangs are bounded by the bench's worker timeout).

Time per target: ``UNET_FUZZ_SECONDS`` (default 5; the suite's share stays near a minute). The long mode is
``make fuzz`` (10 minutes a target, a fresh seed printed first; ``make fuzz UNET_FUZZ_SEED=N`` replays one): the
report (``UNET_FUZZ_REPORT``) lists each target's trial count and the distinct outcomes seen, and a failing
trial with its number and output. The same seed gives the same trials (as long as the input files are the same).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import block_frames, write_carla
from exporter.cli.bench import cli as bench_cli
from exporter.cli.main import cli

SECONDS = float(os.environ.get("UNET_FUZZ_SECONDS", "5"))
SEED = int(os.environ.get("UNET_FUZZ_SEED", "0"))
REPORT = os.environ.get("UNET_FUZZ_REPORT")
FAST = ["--runtimes", "litert", "--warmup", "0", "--min-runs", "1", "--min-seconds", "0", "--timeout", "120"]
_results: dict[str, tuple[int, Counter]] = {}


# -- mutations -------------------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """One random damage: truncation, flipped bytes, 16 bytes overwritten, inserted or deleted bytes."""
    n = len(data)
    at = int(rng.integers(0, max(n, 1)))
    kind = rng.integers(0, 5)
    if kind == 0:
        return data[:at]
    if kind == 1:
        out = bytearray(data)
        for i in rng.integers(0, n, int(rng.integers(1, 17))):
            out[i] ^= int(rng.integers(1, 256))
        return bytes(out)
    if kind == 2:
        return data[:at] + rng.bytes(16) + data[at + 16:]
    if kind == 3:
        return data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at:]
    return data[:at] + data[at + int(rng.integers(1, 64)):]


def mutate_zip(data: bytes, rng: np.random.Generator) -> bytes:
    """Damage at the member level: duplicate, rename, drop or swap members (the bytes of each stay sound)."""
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        members = [(info.filename, src.read(info)) for info in src.infolist()]
    i, j = (int(v) for v in rng.integers(0, len(members), 2))
    kind = rng.integers(0, 4)
    if kind == 0:
        members.insert(j, members[i])
    elif kind == 1:
        names = ["../escape.bin", "/abs.bin", "artifacts/../../x", "artifacts/renamed.tflite", "eval.npz",
                 "pack.json", "artifacts/" + "a" * 300, "artifacts/naïve.tflite"]
        members[i] = (names[int(rng.integers(0, len(names)))], members[i][1])
    elif kind == 2:
        members.pop(i)
    else:
        members[i], members[j] = (members[i][0], members[j][1]), (members[j][0], members[i][1])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": on purpose
        for name, content in members:
            dst.writestr(name, content)
    return out.getvalue()


ODD_VALUES = [None, True, False, 0, -1, 1e308, float("nan"), "", "x" * 500, "../../etc/passwd", [], {}, [None],
              {"a": 1}, 2**63, -0.5]


def mutate_json(value, rng: np.random.Generator):
    """One random edit somewhere in a JSON document: delete, replace by an odd value, rename, duplicate."""
    def containers(node, found):
        if isinstance(node, dict | list):
            found.append(node)
            for child in (node.values() if isinstance(node, dict) else node):
                containers(child, found)
        return found

    value = json.loads(json.dumps(value))
    spots = containers(value, [])
    if not spots:
        return ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))]
    node = spots[int(rng.integers(0, len(spots)))]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    odd = ODD_VALUES[int(rng.integers(0, len(ODD_VALUES)))]
    if not keys:
        if isinstance(node, dict):
            node["new"] = odd
        else:
            node.append(odd)
        return value
    key = keys[int(rng.integers(0, len(keys)))]
    kind = rng.integers(0, 4)
    if kind == 0:
        del node[key]
    elif kind == 1 or isinstance(node, list):
        node[key] = odd if kind == 1 else node[key] * 2 if isinstance(node[key], int | float | str | list) else odd
    elif kind == 2:
        node[f"{key}_renamed"] = node.pop(key)
    else:
        node[key] = [node[key]]
    return value


def json_text(value, rng: np.random.Generator) -> str:
    """The edited document as text; now and then damaged as bytes too."""
    text = json.dumps(value)
    return text if rng.random() < 0.8 else mutate_bytes(text.encode(), rng).decode("utf-8", "replace")


# -- the harness ---------------------------------------------------------------------------------------------

def _normalise(line: str) -> str:
    line = re.sub(r"/\S+", "<path>", line)
    return re.sub(r"\d+(\.\d+)?", "N", line)[:160]


def _listing(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if skip not in p.parents and p != skip}


def fuzz(name: str, root: Path, make_trial, run_trial) -> None:
    """Trials for SECONDS: ``make_trial(rng, folder)`` writes a damaged file and returns it (the file an error
    must name); ``run_trial(folder)`` runs the command that reads it."""
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])  # the same trials in every run
    messages: Counter = Counter()
    trials, started = 0, time.monotonic()
    while trials < 3 or time.monotonic() - started < SECONDS:
        trial_dir = root / f"trial{trials}"
        trial_dir.mkdir()
        before = _listing(root, trial_dir)
        named = make_trial(rng, trial_dir)
        result = run_trial(trial_dir)
        trials += 1
        try:
            messages[_judge(name, trials, result, named)] += 1
            assert _listing(root, trial_dir) == before, (name, trials, "wrote outside its work folder")
        except AssertionError as failure:
            _report(f"## {name}: FAILED at trial {trials} (seed {SEED}): {str(failure)[:3000]}\n", messages)
            raise
        shutil.rmtree(trial_dir)
    _results[name] = (trials, messages)
    _report(f"## {name}: {trials} trials, {len(messages)} distinct outcomes\n", messages)


def _judge(name: str, trials: int, result, named: Path) -> str:
    """The trial's outcome, normalised; AssertionError unless it is exit 0 or one line naming the file, exit 2."""
    out = result.output
    assert "Traceback" not in out, (name, trials, out[-2000:])
    assert result.exit_code in (0, 2), (name, trials, result.exit_code, repr(result.exception), out[-2000:])
    if result.exit_code == 0:
        assert result.exception is None, (name, trials, repr(result.exception))
        return "exit 0"
    lines = out.strip().splitlines()
    # the file, or the folder holding it when the problem is its neighbour (a checkpoint it names)
    said = next((str(p) for p in (named, named.parent) if str(p) in (lines or [""])[0]), None)
    assert len(lines) == 1 and said, (name, trials, out[-2000:])
    return _normalise(lines[0].replace(said, "<file>"))


def _report(heading: str, messages: Counter) -> None:
    if REPORT:
        with open(REPORT, "a") as fh:
            fh.write(heading)
            fh.writelines(f"{count:6d}  {message}\n" for message, count in messages.most_common())


# -- targets ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_run(exported_run, tmp_path_factory) -> tuple[Path, Path]:
    """A run folder with one tflite artifact (and eval.npz), and a pack of it without model.keras."""
    from exporter.pack_builder import PackContents, build_pack

    source, _ = exported_run
    run = tmp_path_factory.mktemp("fuzz") / "run"
    run.mkdir()
    for name in ("model.keras", "config.json", "eval.npz", "unet_fp32.tflite"):
        shutil.copyfile(source / name, run / name)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["path"] == "unet_fp32.tflite"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    pack = run.parent / "one.pack"
    build_pack(run, None, pack, PackContents(frames=4))
    return run, pack


def _bench(pack: Path, work: Path):
    return CliRunner().invoke(bench_cli, ["run", str(pack), "--work-dir", str(work / "work"), *FAST])


def test_fuzz_pack_bytes(fuzz_run, tmp_path):
    _, pack = fuzz_run
    original = pack.read_bytes()

    def make(rng, trial):
        damaged = trial / "damaged.pack"
        damaged.write_bytes(mutate_bytes(original, rng) if rng.random() < 0.7 else mutate_zip(original, rng))
        return damaged

    fuzz("pack bytes and members", tmp_path, make, lambda trial: _bench(trial / "damaged.pack", trial))


def test_fuzz_pack_json(fuzz_run, tmp_path):
    _, pack = fuzz_run
    with zipfile.ZipFile(pack) as src:
        members = {info.filename: src.read(info) for info in src.infolist()}
    meta = json.loads(members["pack.json"])

    def make(rng, trial):
        damaged = trial / "edited.pack"
        with zipfile.ZipFile(damaged, "w", zipfile.ZIP_DEFLATED) as dst:
            for name, content in members.items():
                dst.writestr(name, json_text(mutate_json(meta, rng), rng) if name == "pack.json" else content)
        return damaged

    fuzz("pack.json", tmp_path, make, lambda trial: _bench(trial / "edited.pack", trial))


@pytest.mark.parametrize("file_name", ["manifest.json", "config.json"])
def test_fuzz_run_folder_json(fuzz_run, tmp_path, file_name):
    run, _ = fuzz_run
    original = json.loads((run / file_name).read_text())

    def make(rng, trial):
        copy = trial / "run"
        shutil.copytree(run, copy)
        (copy / file_name).write_text(json_text(mutate_json(original, rng), rng))
        return copy / file_name

    fuzz(f"run folder {file_name} (unet-bench run RUN)", tmp_path, make,
         lambda trial: CliRunner().invoke(bench_cli, ["run", str(trial / "run"), "--work-dir",
                                                      str(trial / "run" / "work"), *FAST]))


def test_fuzz_bench_json_given_to_compare(exported_run, tmp_path_factory, tmp_path):
    run, pack = exported_run
    out = tmp_path_factory.mktemp("bench") / "good.json"
    result = CliRunner().invoke(bench_cli, ["run", str(pack), "--json", str(out), *FAST])
    assert result.exit_code == 0, result.output
    original = json.loads(out.read_text())

    def make(rng, trial):
        damaged = trial / "edited.json"
        damaged.write_text(json_text(mutate_json(original, rng), rng))
        return damaged

    fuzz("bench JSON (unet-bench compare)", tmp_path, make,
         lambda trial: CliRunner().invoke(bench_cli, ["compare", str(out), str(trial / "edited.json")]))


def test_fuzz_png_frames_and_masks(tmp_path_factory, tmp_path):
    images, masks = block_frames(4, seed=3)
    data = write_carla(tmp_path_factory.mktemp("pngs"), images, masks, gb_noise=True)
    files = sorted(data.rglob("*.png"))

    def make(rng, trial):
        copy = trial / "data"
        shutil.copytree(data, copy)
        target = copy / files[int(rng.integers(0, len(files)))].relative_to(data)
        target.write_bytes(mutate_bytes(target.read_bytes(), rng))
        return target

    fuzz("PNG frames and masks (unet-export data check)", tmp_path, make,
         lambda trial: CliRunner().invoke(cli, ["data", "check", str(trial / "data"), "--input-size", "32", "32"]))


def test_fuzz_palette_masks_with_an_ignore_value(tmp_path_factory, tmp_path):
    """Palette PNG masks (class = palette index) with a "don't care" value: data check with --ignore-index."""
    from PIL import Image

    images, masks = block_frames(4, seed=5)
    data = tmp_path_factory.mktemp("palette")
    (data / "images").mkdir()
    (data / "labels").mkdir()
    masks = (masks % 5).astype(np.uint8)
    masks[:, :2] = 255
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(image).save(data / "images" / f"{i}.png")
        indexed = Image.frombytes("P", mask.shape[::-1], mask.tobytes())
        indexed.putpalette([v for c in range(256) for v in (c, 255 - c, c // 2)])
        indexed.save(data / "labels" / f"{i}.png")
    files = sorted((data / "labels").glob("*.png"))

    def make(rng, trial):
        copy = trial / "data"
        shutil.copytree(data, copy)
        target = copy / "labels" / files[int(rng.integers(0, len(files)))].name
        target.write_bytes(mutate_bytes(target.read_bytes(), rng))
        return target

    fuzz("palette masks with an ignore value (data check)", tmp_path, make,
         lambda trial: CliRunner().invoke(cli, ["data", "check", str(trial / "data"), "--input-size", "32", "32",
                                                "--n-classes", "5", "--images-dir", "images", "--masks-dir", "labels",
                                                "--ignore-index", "255"]))


def test_fuzz_labels_file(blocks_dir, tmp_path):
    """A user's class names file (--labels)."""
    from exporter.classes import class_names

    original = ("\n".join(class_names(23)) + "\n").encode()

    def make(rng, trial):
        damaged = trial / "labels.txt"
        damaged.write_bytes(mutate_bytes(original, rng))
        return damaged

    fuzz("labels file (data check --labels)", tmp_path, make,
         lambda trial: CliRunner().invoke(cli, ["data", "check", str(blocks_dir), "--input-size", "32", "32",
                                                "--labels", str(trial / "labels.txt")]))


def test_fuzz_a_users_model_file(tiny_run, blocks_dir, tmp_path):
    """A user's .keras file, damaged as bytes or as zip members, given to an export."""
    original = (tiny_run / "model.keras").read_bytes()

    def make(rng, trial):
        damaged = trial / "mine.keras"
        damaged.write_bytes(mutate_bytes(original, rng) if rng.random() < 0.6 else mutate_zip(original, rng))
        return damaged

    fuzz("a user's model file (onnx --model)", tmp_path, make,
         lambda trial: CliRunner().invoke(cli, ["onnx", "--model", str(trial / "mine.keras"), "--data",
                                                str(blocks_dir), "--validation-samples", "2",
                                                "--out", str(trial / "m.onnx")]))


def test_fuzz_hosts_file(tmp_path):
    """A fleet's hosts file (unet-bench remote --hosts, listed without connecting)."""
    original = b"# the lab\npi4=pi@10.0.0.7\npi5=pi@10.0.0.8:2222\njetson=ubuntu@jetson.local\n"
    pack = tmp_path / "any.pack"
    pack.write_bytes(b"not read by a dry run")
    (tmp_path / "trials").mkdir()

    def make(rng, trial):
        damaged = trial / "hosts.txt"
        damaged.write_bytes(mutate_bytes(original, rng))
        return damaged

    fuzz("hosts file (unet-bench remote --hosts --dry-run)", tmp_path / "trials", make,
         lambda trial: CliRunner().invoke(bench_cli, ["remote", str(pack), "--hosts", str(trial / "hosts.txt"),
                                                      "--dry-run"]))


def test_fuzz_training_state(tiny_run, blocks_dir, tmp_path):
    """A damaged checkpoint/state.json stops --resume with one line; nothing is trained (epochs = done)."""
    original = json.loads((tiny_run / "checkpoint" / "state.json").read_text())
    config = json.loads((tiny_run / "config.json").read_text())
    args = ["--data", str(blocks_dir), "--epochs", str(original["epoch"]), "--batch-size", str(config["batch_size"]),
            "--learning-rate", str(config["learning_rate"]), "--n-filters", str(config["n_filters"]),
            "--input-size", *map(str, config["input_size"]), "--val-split", str(config["val_split"]), "--resume"]

    def make(rng, trial):
        copy = trial / "run"
        shutil.copytree(tiny_run, copy)
        (copy / "checkpoint" / "state.json").write_text(json_text(mutate_json(original, rng), rng))
        return copy / "checkpoint" / "state.json"

    fuzz("checkpoint/state.json (train --resume)", tmp_path, make,
         lambda trial: CliRunner().invoke(cli, ["train", "--out", str(trial / "run"), *args]))


# -- regressions the long mode found (UNET_FUZZ_SEED=4242, 90 s a target) ------------------------------------

def test_a_label_twice_in_a_hosts_file_names_the_file_and_the_line(tmp_path):
    """Trial 143,156 of seed 4242 (make fuzz, 600 s): 'error: --host: the label 'pi4' is given twice', naming
    neither the file nor the line. The exact input, regenerated from the seed and the trial number."""
    hosts, pack = tmp_path / "hosts.txt", tmp_path / "any.pack"
    pack.write_bytes(b"not read by a dry run")
    hosts.write_bytes(b"# the lab\npi4=pi@10.0.0.7\npi4=pi@10.0V0.8:2222\njetson=ubuntu@Hetson.local\n")
    result = CliRunner().invoke(bench_cli, ["remote", str(pack), "--hosts", str(hosts), "--dry-run"])
    assert result.exit_code == 2 and result.output == (
        f"error: {hosts} line 3: the label 'pi4' is given twice (first on line 2); name each host "
        "(label=user@host)\n")


@pytest.mark.parametrize("path,problem", [
    # trial 366: the fuzzer's own odd value ("x" * 500) as artifacts[0].path was OSError(36), exit 1, no message
    ("x" * 500, "a path component longer than 255 bytes"),
    ("é" * 200 + ".tflite", "a path component longer than 255 bytes"),  # 207 characters, 407 bytes: OSError(36)
    ("a/" * 600 + "m.tflite", "a path of 1208 bytes"),
    ("../outside/unet_fp32.tflite", "climbs out of its folder"),
    ("unet\x00.tflite", "control characters"),
])
def test_a_manifest_path_is_checked_before_it_touches_the_file_system(fuzz_run, tmp_path, path, problem):
    run = tmp_path / "run"
    shutil.copytree(fuzz_run[0], run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["artifacts"][0]["path"] = path
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(bench_cli, ["run", str(run), "--work-dir", str(tmp_path / "work"), *FAST])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert str(run / "manifest.json") in result.output and problem in result.output, result.output


def test_a_resume_whose_state_names_a_missing_checkpoint_says_so_before_anything_else(tiny_run, blocks_dir,
                                                                                        tmp_path):
    """Trial 279 of seed 4242: last_checkpoint null (the 0.1 layout's last.keras, absent) printed the data line
    first, then 'cannot resume from this checkpoint'. The state is now checked first, checkpoints included."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    for damage in ({"last_checkpoint": None}, {"best_checkpoint": "epoch_0999.keras"}):
        state = json.loads((tiny_run / "checkpoint" / "state.json").read_text())
        (run / "checkpoint" / "state.json").write_text(json.dumps({**state, **damage}))
        result = CliRunner().invoke(cli, [
            "train", "--out", str(run), "--data", str(blocks_dir), "--resume", "--epochs", str(state["epoch"]),
            "--batch-size", str(config["batch_size"]), "--learning-rate", str(config["learning_rate"]),
            "--n-filters", str(config["n_filters"]), "--input-size", *map(str, config["input_size"]),
            "--val-split", str(config["val_split"])])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "missing, but state.json names it" in result.output and str(run / "checkpoint") in result.output
