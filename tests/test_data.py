import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_carla
from exporter.cli.main import cli
from exporter.data.carla import DataFormat, split_indices
from exporter.data.index import INDEX_FILE, index_dataset, load_frames, stream_dataset
from exporter.errors import UserError


def _scene(n, height, width, n_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, n_classes, (n, height // 8, width // 8)).repeat(8, 1).repeat(8, 2).astype(np.uint8)
    images = (masks[..., None] * 40 + rng.integers(0, 30, (n, height, width, 3))).astype(np.uint8)
    return images, masks


@pytest.fixture
def good_dir(tmp_path):
    images, masks = _scene(6, 48, 64)  # not the model size: the reader resizes
    return write_carla(tmp_path / "data", images, masks, gb_noise=True)


def test_reader_resizes_and_takes_the_red_channel_despite_noisy_green_blue(good_dir):
    frames = load_frames(good_dir, DataFormat((32, 32), 5))
    assert frames.images.shape == (6, 32, 32, 3) and frames.images.dtype == np.float32
    assert frames.masks.shape == (6, 32, 32) and frames.masks.dtype == np.uint8
    assert 0.0 <= frames.images.min() and frames.images.max() <= 1.0
    _, masks = _scene(6, 48, 64)
    # nearest-neighbour resize keeps only real class ids, and the class layout survives the resize
    assert set(np.unique(frames.masks)) <= set(np.unique(masks))
    assert frames.masks[0, 0, 0] == masks[0, 0, 0] and frames.masks[0, -1, -1] == masks[0, -1, -1]


def test_split_is_deterministic_and_disjoint():
    train_a, val_a = split_indices(100, 0.2, seed=3)
    train_b, val_b = split_indices(100, 0.2, seed=3)
    assert np.array_equal(val_a, val_b) and len(val_a) == 20
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == 100
    assert not np.array_equal(split_indices(100, 0.2, seed=4)[1], val_a)


def test_streamed_frames_are_the_frames_the_reader_loads(tmp_path, good_dir):
    # at the model's size: byte-identical (PNG is lossless, nothing is resized)
    images, masks = _scene(6, 32, 32, seed=2)
    exact = write_carla(tmp_path / "exact", images, masks, gb_noise=True)
    index = index_dataset(exact, DataFormat((32, 32), 5))
    frames = load_frames(exact, DataFormat((32, 32), 5))
    batches = list(stream_dataset(index, range(len(index)), batch_size=4, shuffle=False))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    assert np.array_equal(np.concatenate([b[0].numpy() for b in batches]), frames.images)
    assert np.array_equal(np.concatenate([b[1].numpy() for b in batches]), frames.masks)
    # resized: still the reader's pixels (one decoder for training, validation, calibration and exports)
    index = index_dataset(good_dir, DataFormat((32, 32), 5))
    frames = load_frames(good_dir, DataFormat((32, 32), 5))
    streamed = list(stream_dataset(index, range(len(index)), batch_size=6, shuffle=False))[0]
    assert np.array_equal(streamed[0].numpy(), frames.images) and np.array_equal(streamed[1].numpy(), frames.masks)
    # a frame damaged after the check: the pipeline names it instead of training on garbage
    (good_dir / "CameraRGB" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(Exception, match="changed since the data check: .*0001.png: unreadable image"):
        list(stream_dataset(index, range(len(index)), batch_size=6, shuffle=False))


def test_the_check_is_kept_beside_the_data_and_redone_when_a_file_changes(good_dir):
    first = index_dataset(good_dir, DataFormat((32, 32), 5))
    assert not first.reused and (good_dir / INDEX_FILE).is_file()
    frames = load_frames(good_dir, DataFormat((32, 32), 5))
    expected = np.stack([np.bincount(m.ravel(), minlength=5) for m in frames.masks])
    assert np.array_equal(first.histograms, expected) and first.stems == tuple(frames.stems)
    again = index_dataset(good_dir, DataFormat((32, 32), 5))
    assert again.reused and np.array_equal(again.histograms, first.histograms)
    assert not index_dataset(good_dir, DataFormat((16, 16), 5)).reused  # other settings: checked anew
    # a file damaged after the check: its size changes, the check runs again and names it
    (good_dir / "CameraRGB" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="0002.png: unreadable image"):
        index_dataset(good_dir, DataFormat((32, 32), 5))
    skipped = index_dataset(good_dir, DataFormat((32, 32), 5), skip_bad=True)
    assert len(skipped) == 5 and len(skipped.skipped) == 1
    result = CliRunner().invoke(cli, ["data", "check", str(good_dir), "--skip-bad", "--n-classes", "5"])
    assert result.exit_code == 0 and "5 usable frames" in result.output, result.output


@pytest.mark.parametrize("name", ["../../outside.png", "/etc/hostname", "0003.png"])
def test_a_stored_check_naming_other_files_is_never_trusted(good_dir, name):
    """Its fingerprint kept, a frame's file name edited: that file is never opened, the data is checked again."""
    import json

    index_dataset(good_dir, DataFormat((32, 32), 5))
    stored = json.loads((good_dir / INDEX_FILE).read_text())
    stored["frames"][0]["image"] = name
    (good_dir / INDEX_FILE).write_text(json.dumps(stored))
    again = index_dataset(good_dir, DataFormat((32, 32), 5))
    assert not again.reused and again.images[0] == "0000.png"


def test_a_read_only_data_folder_is_checked_every_time(good_dir, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):  # what the OS says for a read-only mount (root ignores chmod here)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # the real write path (fileio.atomic_path) fails on it
    said, notes = [], []
    index = index_dataset(good_dir, DataFormat((32, 32), 5), warn=said.append, note=notes.append)
    assert len(index) == 6 and not index.reused and not (good_dir / INDEX_FILE).exists()
    assert not said and len(notes) == 1 and "Permission denied" in notes[0] and "redone next time" in notes[0]
    monkeypatch.undo()
    assert not index_dataset(good_dir, DataFormat((32, 32), 5), write=False).reused  # a worker: reads, never writes
    assert not (good_dir / INDEX_FILE).exists()


def test_a_copy_that_keeps_modification_times_is_checked_again(good_dir, tmp_path):
    import shutil

    index_dataset(good_dir, DataFormat((32, 32), 5))
    copy = shutil.copytree(good_dir, tmp_path / "copy", copy_function=shutil.copy2)  # like cp -p: same mtimes
    damaged = bytearray((copy / "CameraRGB" / "0002.png").read_bytes())
    damaged[40:56] = bytes(16)  # same size, same modification time: only the inode and change time differ
    (copy / "CameraRGB" / "0002.png").write_bytes(bytes(damaged))
    import os

    stat = (good_dir / "CameraRGB" / "0002.png").stat()
    os.utime(copy / "CameraRGB" / "0002.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(UserError, match="0002.png: unreadable image"):
        index_dataset(copy, DataFormat((32, 32), 5))


def _corrupt_image(d):
    (d / "CameraRGB" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return "0002.png", "unreadable image"


def _orphan_image(d):
    (d / "CameraMask" / "0003.png").unlink()
    return "0003.png", "has no mask"


def _orphan_mask(d):
    (d / "CameraRGB" / "0004.png").unlink()
    return "0004.png", "has no image"


def _wrong_size_mask(d):
    from PIL import Image

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(d / "CameraMask" / "0001.png")
    return "0001.png", "mask is 10x10 (HxW) but its image is 48x64"


def _class_out_of_range(d):
    from PIL import Image

    mask = np.zeros((48, 64, 3), np.uint8)
    mask[5, 5, 0] = 9
    Image.fromarray(mask).save(d / "CameraMask" / "0005.png")
    return "0005.png", "class id 9 out of range (n_classes=5)"


@pytest.mark.parametrize("breaker", [_corrupt_image, _orphan_image, _orphan_mask, _wrong_size_mask,
                                     _class_out_of_range])
def test_bad_data_exit_2_with_one_line_naming_the_file(good_dir, breaker):
    name, problem = breaker(good_dir)
    result = CliRunner().invoke(cli, ["data", "check", str(good_dir), "--n-classes", "5",
                                      "--input-size", "32", "32"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and problem in lines[0]
    assert "Traceback" not in result.output

    skipped = CliRunner().invoke(cli, ["data", "check", str(good_dir), "--n-classes", "5",
                                       "--input-size", "32", "32", "--skip-bad"])
    assert skipped.exit_code == 0, skipped.output
    assert name in skipped.output and "skipped 1 bad file(s)" in skipped.output
    assert "5 usable frames" in skipped.output


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_missing_or_empty_folder(tmp_path, layout):
    if layout == "empty":
        (tmp_path / "CameraRGB").mkdir()
        (tmp_path / "CameraMask").mkdir()
    target = tmp_path if layout == "empty" else tmp_path / "nope"
    with pytest.raises(UserError, match="no .png/.jpg frames|folder not found"):
        load_frames(target)
    result = CliRunner().invoke(cli, ["data", "check", str(target)])
    assert result.exit_code == 2 and str(target) in result.output


def test_all_frames_bad_with_skip_bad_is_still_an_error(good_dir):
    for p in (good_dir / "CameraRGB").iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(UserError, match="no usable frames \\(6 skipped\\)"):
        load_frames(good_dir, DataFormat((32, 32), 5), skip_bad=True)
