"""Synthetic CARLA-layout scenes: layout, label encoding, determinism, content, sizes, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from exporter.classes import CLASS_ID
from exporter.data.synth import render_scene, write_synthetic_dataset
from exporter.errors import UserError


def _read(path):
    with Image.open(path) as im:
        return im.mode, np.asarray(im)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = write_synthetic_dataset(out, count=6, seed=3, size=(48, 64))
    return out, summary


def test_writes_carla_layout_with_matching_stems(small_set):
    out, summary = small_set
    images = sorted(p.name for p in (out / "CameraRGB").iterdir())
    masks = sorted(p.name for p in (out / "CameraMask").iterdir())
    assert images == masks == [f"{i:05d}.png" for i in range(6)]  # no temp files left behind
    for name in images:
        mode, image = _read(out / "CameraRGB" / name)
        assert mode == "RGB" and image.shape == (48, 64, 3) and image.dtype == np.uint8
        mode, mask = _read(out / "CameraMask" / name)
        assert mode == "RGB" and mask.shape == (48, 64, 3)
    assert summary["count"] == 6 and summary["seed"] == 3 and list(summary["size"]) == [48, 64]


def test_mask_red_channel_holds_class_ids_green_and_blue_are_zero(small_set):
    out, summary = small_set
    counts = np.zeros(23, np.int64)
    for path in sorted((out / "CameraMask").iterdir()):
        _, mask = _read(path)
        assert mask[..., 0].max() <= 22
        assert not mask[..., 1:].any()
        counts += np.bincount(mask[..., 0].ravel(), minlength=23)
    # the summary's fractions are those of the files on disk
    fractions = summary["class_pixel_fraction"]
    assert set(fractions) == set(CLASS_ID)
    assert sum(fractions.values()) == pytest.approx(1.0)
    for name, fraction in fractions.items():
        assert fraction == pytest.approx(counts[CLASS_ID[name]] / counts.sum())


def test_pictures_are_not_flat_and_differ_between_frames(small_set):
    out, _ = small_set
    first = _read(out / "CameraRGB" / "00000.png")[1].astype(np.int16)
    second = _read(out / "CameraRGB" / "00001.png")[1].astype(np.int16)
    assert first.std() > 15 and np.abs(first - second).mean() > 10


def test_same_seed_gives_identical_bytes_whatever_the_count(tmp_path):
    write_synthetic_dataset(tmp_path / "a", count=3, seed=7, size=(32, 32))
    write_synthetic_dataset(tmp_path / "b", count=2, seed=7, size=(32, 32))
    write_synthetic_dataset(tmp_path / "c", count=2, seed=8, size=(32, 32))
    for folder in ("CameraRGB", "CameraMask"):
        for name in ("00000.png", "00001.png"):
            assert (tmp_path / "a" / folder / name).read_bytes() == (tmp_path / "b" / folder / name).read_bytes()
    assert (tmp_path / "a" / "CameraRGB" / "00000.png").read_bytes() != (
        tmp_path / "c" / "CameraRGB" / "00000.png").read_bytes()
    assert (tmp_path / "a" / "CameraMask" / "00001.png").read_bytes() != (
        tmp_path / "c" / "CameraMask" / "00001.png").read_bytes()


def test_a_folder_with_frames_is_refused_and_force_replaces_them_all(tmp_path):
    from click.testing import CliRunner

    from exporter.cli.main import cli

    write_synthetic_dataset(tmp_path, count=4, seed=0, size=(32, 32))
    (tmp_path / "CameraRGB" / "notes.png").write_bytes(b"someone else's file")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.png")}
    with pytest.raises(UserError, match=r"already holds 5 frame\(s\) and 4 mask\(s\); .*--force"):
        write_synthetic_dataset(tmp_path, count=2, seed=1, size=(32, 32))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.png")} == before  # nothing touched
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path), "--count", "2", "--size", "32", "32"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "--force" in result.output
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path), "--count", "2", "--size", "32", "32",
                                      "--force"])
    assert result.exit_code == 0, result.output
    assert "removed 5 file(s) of the earlier data set" in result.output  # 00002-3 twice, notes.png
    assert sorted(p.name for p in (tmp_path / "CameraRGB").iterdir()) == ["00000.png", "00001.png"]
    assert sorted(p.name for p in (tmp_path / "CameraMask").iterdir()) == ["00000.png", "00001.png"]


def test_render_scene_is_a_pure_function_of_the_generator_state():
    a_img, a_mask = render_scene(np.random.default_rng([5, 1]), 40, 56)
    b_img, b_mask = render_scene(np.random.default_rng([5, 1]), 40, 56)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert a_img.shape == (40, 56, 3) and a_mask.shape == (40, 56)
    assert a_img.dtype == np.uint8 and a_mask.dtype == np.uint8


def test_scenes_look_like_roads():
    present = np.zeros(23, np.int64)
    for index in range(12):
        image, mask = render_scene(np.random.default_rng([0, index]), 96, 128)
        present += np.bincount(mask.ravel(), minlength=23) > 0
        # sky is at the top, road at the bottom centre, in every frame
        assert (mask[:10] == CLASS_ID["sky"]).any() or (mask[:10] == CLASS_ID["building"]).any()
        assert (mask[-8:, 40:88] == CLASS_ID["road"]).mean() > 0.5
        # the road is darker than the sky on average (lighting varies, the order does not)
        sky, road = mask == CLASS_ID["sky"], mask == CLASS_ID["road"]
        if sky.any():
            assert image[sky].mean() > image[road].mean()
    names = {name for name, i in CLASS_ID.items() if present[i]}
    assert {"road", "sky", "vehicles", "sidewalk", "building", "roadline", "pole", "vegetation"} <= names
    assert len(names) >= 10
    assert not names & {"unlabeled", "bridge", "railtrack", "water"}


def test_vehicles_and_pedestrians_are_solid_blobs_not_specks():
    sizes = {"vehicles": [], "pedestrian": []}
    for index in range(20):
        _, mask = render_scene(np.random.default_rng([1, index]), 96, 128)
        for name in sizes:
            rows, cols = np.nonzero(mask == CLASS_ID[name])
            if rows.size:
                sizes[name].append(rows.size)
    assert sizes["vehicles"] and np.median(sizes["vehicles"]) > 100
    assert sizes["pedestrian"] and np.median(sizes["pedestrian"]) >= 32


@pytest.mark.parametrize("size", [(32, 32), (17, 45), (5, 3), (1, 1), (160, 96)])
def test_any_positive_size_renders(size):
    image, mask = render_scene(np.random.default_rng(0), *size)
    assert image.shape == (*size, 3) and mask.shape == size
    assert mask.max() <= 22


def test_large_frames_render_at_full_resolution():
    image, mask = render_scene(np.random.default_rng([2, 0]), 480, 640)
    assert image.shape == (480, 640, 3)
    assert len(np.unique(mask)) >= 6


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": 0}, "count"),
    ({"count": -3}, "count"),
    ({"count": 2.5}, "count"),
    ({"count": 2, "size": (0, 32)}, "size"),
    ({"count": 2, "size": (32, -1)}, "size"),
    ({"count": 2, "size": (32,)}, "size"),
    ({"count": 2, "size": "big"}, "size"),
    ({"count": 2, "seed": -1}, "seed"),
])
def test_bad_arguments_raise_user_error(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        write_synthetic_dataset(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_unwritable_out_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=r"cannot write") as info:
        write_synthetic_dataset(blocker / "sub", count=1, size=(16, 16))
    assert str(blocker / "sub") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"cannot write"):
        write_synthetic_dataset(blocker, count=1, size=(16, 16))
