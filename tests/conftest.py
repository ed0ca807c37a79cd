"""Shared test helpers: one frame generator, tiny CARLA-layout data sets, and ONE tiny trained model.

The tiny model (``tiny_run``: the seed U-Net at n_filters=4, 32×32, 23 classes, trained by our own
``train`` on ``blocks_dir``) is the only model trained in the suite (test_train trains its own runs to test
training). ``tiny_artifacts`` converts it once with the library's converters, for the runtime and metadata
tests. Markers: ``slow`` (trains, converts or runs a subprocess for more than a few seconds) and ``gpu``
(skipped where no GPU is present); ``make test`` runs everything, ``pytest -m "not slow"`` the quick part.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

SLOW_FIXTURES = {"tiny_run", "tiny_artifacts", "exported_run"}  # each trains or converts the tiny model


def gpu_present() -> str | None:
    """None if this machine shows a GPU device node, else why the gpu tests are skipped."""
    nodes = [*Path("/dev").glob("nvidia[0-9]*"), *Path("/dev/dri").glob("renderD*")] if Path("/dev").is_dir() else []
    return None if nodes else "no GPU on this machine (no /dev/nvidia* or /dev/dri/renderD* device)"


def pytest_collection_modifyitems(config, items):
    """``slow``: every test that needs the trained tiny model; ``gpu`` tests skip cleanly without a GPU."""
    no_gpu = gpu_present()
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if no_gpu and item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.skip(reason=no_gpu))


TINY_SIZE = (32, 32)
TINY_CLASSES = 23

# Two fp32 implementations of one model (Keras vs LiteRT, ONNX Runtime, OpenVINO) sum each conv's K products
# in different orders and vector widths (AVX-512 vs AVX2), so they differ by a few units in the last place of
# the largest values, not by a fixed absolute amount: measured 6.1e-5 on AVX-512 and 1.07e-4 on AVX2 for
# logits up to ~240, i.e. 2-4 eps of the largest logit. The bound is 64 eps relative to the largest
# reference logit: ~20x the worst seen, yet ~8x below what fp16 weights would cause (2^-11 relative).
FP32_RELATIVE_TOLERANCE = 64 * float(np.finfo(np.float32).eps)


def fp32_tolerance(reference: np.ndarray) -> float:
    """Largest |Δlogit| an fp32 artifact may show against fp32 reference logits, on any CPU."""
    return FP32_RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Gap between the largest and second-largest logit of each pixel: how far it is from an argmax tie."""
    top2 = np.sort(logits, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def write_carla(folder: Path, images: np.ndarray, masks: np.ndarray, gb_noise: bool = False,
                seed: int = 0) -> Path:
    """Write uint8 images N×H×W×3 and class masks N×H×W as CARLA-layout PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "CameraRGB").mkdir(parents=True, exist_ok=True)
    (folder / "CameraMask").mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        rgb_mask = np.zeros((*mask.shape, 3), np.uint8)
        rgb_mask[..., 0] = mask
        if gb_noise:
            rgb_mask[..., 1:] = rng.integers(0, 256, (*mask.shape, 2), dtype=np.uint8)
        Image.fromarray(image).save(folder / "CameraRGB" / f"{i:04d}.png")
        Image.fromarray(rgb_mask).save(folder / "CameraMask" / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """40 synthetic driving scenes at 32×32."""
    from exporter.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, count=40, seed=1, size=TINY_SIZE)
    return out


BLOCK_CLASSES = (1, 4, 7, 8, 9, 10, 13)  # building, pedestrian, road, sidewalk, vegetation, vehicles, sky


def block_frames(count: int, seed: int, size: tuple[int, int] = TINY_SIZE, block: int = 8,
                 noise: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 frames N×H×W×3 and class masks N×H×W: block×block squares of seven CARLA classes in
    their palette colours, with noise. A tiny model learns them to ~95% pixel accuracy in seconds, so
    quantization tests see real logit margins instead of near-ties. Frames are camera bytes (k/255 exact)."""
    from exporter.classes import CARLA_PALETTE

    rng = np.random.default_rng(seed)
    ids = np.array(BLOCK_CLASSES)
    masks = ids[rng.integers(0, len(ids), (count, size[0] // block, size[1] // block))]
    masks = masks.repeat(block, 1).repeat(block, 2).astype(np.uint8)
    jitter = rng.integers(-noise, noise + 1, (count, *size, 3))
    return np.clip(CARLA_PALETTE[masks].astype(int) + jitter, 0, 255).astype(np.uint8), masks


@pytest.fixture(scope="session")
def blocks_dir(tmp_path_factory) -> Path:
    """96 block frames (see ``block_frames``) in the CARLA layout, masks with noise in green and blue."""
    images, masks = block_frames(96, seed=0)
    return write_carla(tmp_path_factory.mktemp("blocks"), images, masks, gb_noise=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, blocks_dir) -> Path:
    """A run folder holding the tiny U-Net (n_filters=4, 32×32, 23 classes) trained on blocks_dir."""
    from exporter.train import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=12, batch_size=4, learning_rate=5e-3, n_filters=4, input_size=TINY_SIZE,
                         n_classes=TINY_CLASSES, val_split=0.25, seed=0)
    train(blocks_dir, run_dir, config, log=None, verbose=0)
    return run_dir


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_run, tmp_path_factory) -> dict:
    """The tiny model converted by the library, once: fp32.tflite, int8.tflite (full integer, uint8 camera
    bytes in, uint8 out), argmax.tflite (fp32, class map out), fp32.onnx, model.keras; three held-out block
    frames (float, byte-exact), the Keras reference logits on them, their argmax and top-2 margins."""
    import shutil

    import keras
    import onnx

    from exporter.contracts.export_spec import ExportSpec
    from exporter.export.onnx_export import convert_onnx
    from exporter.export.tflite_export import convert_tflite

    out = tmp_path_factory.mktemp("artifacts")
    shutil.copyfile(tiny_run / "model.keras", out / "model.keras")
    model = keras.saving.load_model(out / "model.keras", compile=False)
    images, masks = block_frames(48, seed=1)
    calibration = select_calibration(images.astype(np.float32) / 255.0, masks, 32)
    (out / "fp32.tflite").write_bytes(convert_tflite(model, ExportSpec("tflite")))
    (out / "int8.tflite").write_bytes(convert_tflite(model, ExportSpec("tflite", "int8", io="uint8"), calibration))
    (out / "argmax.tflite").write_bytes(convert_tflite(model, ExportSpec("tflite", argmax=True)))
    onnx.save(convert_onnx(model), out / "fp32.onnx")
    frames = block_frames(3, seed=7)[0].astype(np.float32) / 255.0
    reference = model.predict(frames, verbose=0)
    classes = np.argmax(reference, axis=-1)
    assert len(np.unique(classes)) >= 3, "the tiny model must predict several classes"
    np.save(out / "frames.npy", frames)
    np.save(out / "reference.npy", reference)
    return {"dir": out, "model": model, "calibration": calibration, "frames": frames, "reference": reference,
            "classes": classes, "margin": top2_margin(reference)}


@pytest.fixture(scope="session")
def exported_run(tiny_run: Path, blocks_dir, tmp_path_factory):
    """A copy of the tiny run (its own manifest) with a few artifacts exported and packed."""
    import shutil

    from exporter.contracts.export_spec import ExportSpec
    from exporter.export.api import ExportContext
    from exporter.pack_builder import PackContents, build_pack

    run = tmp_path_factory.mktemp("bench") / "run"
    run.mkdir()
    for name in ("model.keras", "config.json"):
        shutil.copyfile(tiny_run / name, run / name)
    ctx = ExportContext.open(run / "model.keras", blocks_dir, validation_samples=8, log=None)
    ctx.export(ExportSpec("tflite"), run / "unet_fp32.tflite")
    ctx.export(ExportSpec("tflite", "int8", io="uint8", argmax=True), run / "unet_int8_uint8io_argmax.tflite",
               calibration_samples=20)
    ctx.export(ExportSpec("onnx"), run / "unet_fp32.onnx")
    pack = run.parent / "tiny.pack"
    build_pack(run, blocks_dir, pack, PackContents(frames=6, include_keras=True), context=ctx)
    return run, pack


def select_calibration(images: np.ndarray, masks: np.ndarray, count: int, seed: int = 0):
    """Calibration frames picked from in-memory masks (the library picks from the data check's histograms):
    ``count`` frames so that every class present in ``masks`` is seen, rarest classes first."""
    from exporter.export.calibration import CalibrationSet, balanced_pick

    n_classes = int(masks.max()) + 1
    has_class = np.stack([np.bincount(m.ravel(), minlength=n_classes) > 0 for m in masks])  # N × C
    chosen, classes, covered = balanced_pick(has_class, count, seed)
    return CalibrationSet(images[chosen], tuple(chosen), tuple(classes), tuple(covered))


def mediapipe_category_mask(model_path: str, image: np.ndarray) -> np.ndarray:
    """Run MediaPipe's ImageSegmenter (IMAGE mode, category mask) on one H×W×3 uint8 RGB frame the size of
    the model input; return H×W uint8."""
    from mediapipe.tasks.metadata import schema_py_generated as tfl
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import image_segmenter
    from mediapipe.tasks.python.vision.core.image import Image, ImageFormat
    from mediapipe.tasks.python.vision.core.vision_task_running_mode import VisionTaskRunningMode

    frame = np.asarray(image)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected one H×W×3 uint8 RGB frame, got {frame.dtype} {frame.shape}")
    model = tfl.Model.GetRootAs(Path(model_path).read_bytes(), 0)
    subgraph = model.Subgraphs(0)
    input_shape = tuple(int(v) for v in subgraph.Tensors(subgraph.Inputs(0)).ShapeAsNumpy())
    if input_shape[1:3] != frame.shape[:2]:  # MediaPipe would resize, and the mask would not be ours
        raise ValueError(f"frame is {frame.shape[:2]}, the model input {input_shape}: pass a frame of the input size")
    options = image_segmenter.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        running_mode=VisionTaskRunningMode.IMAGE,
        output_confidence_masks=False,
        output_category_mask=True,
    )
    with image_segmenter.ImageSegmenter.create_from_options(options) as segmenter:
        result = segmenter.segment(Image(image_format=ImageFormat.SRGB, data=np.ascontiguousarray(frame)))
        mask = np.array(result.category_mask.numpy_view(), dtype=np.uint8, copy=True)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"MediaPipe returned a {mask.shape} mask for a {frame.shape[:2]} frame")
    return mask
