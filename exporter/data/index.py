"""Check a CARLA-layout folder once and remember what it learned; stream its frames from disk.

``index_dataset`` decodes every pair once, in parallel, with the same strict checks as ``load_frame``
(unreadable file, missing mask, size mismatch, class id out of range: a ``UserError`` naming the file, or a
warning with ``skip_bad``) and keeps, per frame, only its file names, source size and class histogram at
the model's resolution. The result is written beside the data (``DATA_DIR/.unet-index.json``) with a
fingerprint of the files (names, sizes, inodes, modification and change times) and the check's settings:
a second run on the same files reads it instead of decoding everything again. A folder that cannot be
written is checked each time (a note says so).

The histograms feed the class-balanced calibration pick and the train/validation split without holding
frames in memory; ``stream_dataset`` then reads the frames through a parallel ``tf.data`` pipeline (read,
decode, red-channel class ids, resize, batch, prefetch), so memory stays flat as the data set grows. It
decodes with the same PIL code as every other reader (``load_frame``): training, validation, calibration
and the export reference see the same pixels; PIL releases the GIL, so the parallel map keeps up.
Host side (``stream_dataset`` imports TensorFlow).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.data.carla import CARLA, DataFormat, Frames, find_pairs, frame_arrays, load_frame, read_image
from exporter.errors import UserError
from exporter.fileio import write_json_atomic

INDEX_FILE = ".unet-index.json"
INDEX_VERSION = 3  # 3: the data format (folders, ignore value) is part of the check; histograms leave it out


@dataclass(frozen=True)
class DataIndex:
    """What the check learned about a folder: usable frames in file order, and what each holds."""

    data_dir: Path
    fmt: DataFormat
    stems: tuple[str, ...]
    images: tuple[str, ...]  # file names in the image folder (CameraRGB/)
    masks: tuple[str, ...]   # file names in the mask folder (CameraMask/)
    histograms: np.ndarray   # N × n_classes pixel counts at the model's resolution (ignored pixels left out)
    source_sizes: tuple[tuple[int, int], ...]  # (H, W) of each image as stored
    mask_modes: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    reused: bool = False     # read from DATA_DIR/.unet-index.json rather than checked now

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def size(self) -> tuple[int, int]:
        return self.fmt.size

    @property
    def n_classes(self) -> int:
        return self.fmt.n_classes

    @property
    def has_class(self) -> np.ndarray:
        """N × n_classes: which classes each frame shows."""
        return self.histograms > 0

    def class_pixels(self) -> np.ndarray:
        return self.histograms.sum(axis=0)

    def paths(self, positions=None) -> tuple[list[str], list[str]]:
        positions = range(len(self)) if positions is None else positions
        return ([str(self.data_dir / self.fmt.images / self.images[i]) for i in positions],
                [str(self.data_dir / self.fmt.masks / self.masks[i]) for i in positions])

    def load(self, positions) -> Frames:
        """The frames at ``positions`` in memory (PIL, exactly as ``load_frames`` reads them)."""
        positions = [int(i) for i in positions]
        images, masks = self.paths(positions)
        pairs = [load_frame(Path(i), Path(m), self.fmt) for i, m in zip(images, masks, strict=True)]
        if not pairs:
            return Frames(np.zeros((0, *self.size, 3), np.float32), np.zeros((0, *self.size), np.uint8), [])
        return Frames(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                      [self.stems[i] for i in positions])


def _fingerprint(pairs: list[tuple[str, Path, Path]], fmt: DataFormat, skip_bad: bool, unpaired: list[str]) -> str:
    """Names, sizes, inodes, modification and change times of every file: a copy that keeps modification
    times (cp -p, rsync -a, tar) still gets new change times and inodes, so it is checked again."""
    digest = hashlib.sha256(json.dumps([INDEX_VERSION, list(fmt.size), fmt.n_classes, fmt.layout(), skip_bad,
                                        unpaired]).encode())
    for stem, image, mask in pairs:
        for path in (image, mask):
            try:
                stat = path.stat()
            except OSError as exc:  # a dangling link, a file removed meanwhile
                raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
            digest.update(f"{stem}\0{path.name}\0{stat.st_size}\0{stat.st_ino}\0{stat.st_mtime_ns}\0"
                          f"{stat.st_ctime_ns}\n".encode())
    return digest.hexdigest()


def _check_pair(pair, fmt: DataFormat):
    """(stem, histogram, source size, mask mode) or (stem, UserError)."""
    stem, image_path, mask_path = pair
    try:
        raw_image, raw_mask = read_image(image_path), read_image(mask_path)
        _, mask = frame_arrays(raw_image, raw_mask, mask_path, fmt)
        mode, source = raw_mask.mode, (raw_image.size[1], raw_image.size[0])
    except UserError as exc:
        return stem, exc
    valid = fmt.valid(mask)
    counted = mask.ravel() if valid is None else mask[valid]
    return stem, np.bincount(counted, minlength=fmt.n_classes)[:fmt.n_classes].astype(np.int64), source, mode


def _read_cached(path: Path, fingerprint: str, data_dir: Path, fmt: DataFormat,
                 pairs: list[tuple[str, Path, Path]]) -> DataIndex | None:
    """The stored check, if it is of these files: its fingerprint, and every frame one of the pairs found (a
    hand-edited name, ``../x`` or another file, is never opened: the data is checked again)."""
    found = {(stem, image.name, mask.name) for stem, image, mask in pairs}
    try:
        data = json.loads(path.read_text())
        if data.get("version") != INDEX_VERSION or data.get("fingerprint") != fingerprint:
            return None
        frames = data["frames"]
        if any((f["stem"], f["image"], f["mask"]) not in found for f in frames):
            return None
        histograms = np.array([f["histogram"] for f in frames], dtype=np.int64).reshape(len(frames), fmt.n_classes)
        return DataIndex(data_dir, fmt, tuple(f["stem"] for f in frames),
                         tuple(f["image"] for f in frames), tuple(f["mask"] for f in frames), histograms,
                         tuple(tuple(f["source_size"]) for f in frames), tuple(f["mask_mode"] for f in frames),
                         tuple(data.get("skipped", ())), reused=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or from another version: check again (and rewrite it)


def index_dataset(data_dir: str | Path, fmt: DataFormat = CARLA, skip_bad: bool = False,
                  warn: Callable[[str], None] | None = None, workers: int | None = None, cache: bool = True,
                  write: bool = True, note: Callable[[str], None] | None = None) -> DataIndex:
    """Check every frame of ``data_dir`` once (or reuse the check stored beside it); see the module doc.

    ``warn`` hears each skipped file (``skip_bad``); ``note`` that the check could not be kept beside the
    data; ``write=False``: reuse a stored check but do not store one (workers other than the chief)."""
    data_dir = Path(data_dir)
    warn = warn or (lambda message: None)
    note = note or warn
    skipped: list[str] = []

    def on_bad(message: str) -> None:
        skipped.append(message)
        warn(message)

    pairs = find_pairs(data_dir, (lambda message: skipped.append(message)) if skip_bad else None, fmt)
    fingerprint = _fingerprint(pairs, fmt, skip_bad, list(skipped))
    index_path = data_dir / INDEX_FILE
    if cache:
        cached = _read_cached(index_path, fingerprint, data_dir, fmt, pairs)
        if cached is not None:
            for message in cached.skipped:
                warn(message)
            return cached

    for message in skipped:
        warn(message)
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:  # PIL's decoders release the GIL
        results = list(pool.map(lambda pair: _check_pair(pair, fmt), pairs))
    kept = []
    for (stem, image_path, mask_path), result in zip(pairs, results, strict=True):
        if isinstance(result[1], UserError):
            if not skip_bad:
                raise result[1]
            on_bad(str(result[1]))
            continue
        kept.append((stem, image_path.name, mask_path.name, *result[1:]))
    if not kept:
        raise UserError(f"{data_dir}: no usable frames" + (f" ({len(skipped)} skipped)" if skipped else ""))
    index = DataIndex(data_dir, fmt, tuple(k[0] for k in kept), tuple(k[1] for k in kept),
                      tuple(k[2] for k in kept), np.stack([k[3] for k in kept]), tuple(k[4] for k in kept),
                      tuple(k[5] for k in kept), tuple(skipped))
    if cache and write:
        record = {"version": INDEX_VERSION, "fingerprint": fingerprint, "size": list(fmt.size),
                  "n_classes": fmt.n_classes, **fmt.layout(),
                  "skipped": list(skipped),
                  "frames": [{"stem": s, "image": i, "mask": m, "histogram": h.tolist(), "source_size": list(z),
                              "mask_mode": mode}
                             for s, i, m, h, z, mode in zip(index.stems, index.images, index.masks, index.histograms,
                                                            index.source_sizes, index.mask_modes, strict=True)]}
        try:
            write_json_atomic(index_path, record)
        except UserError as exc:  # a read-only data folder: fine, the check is redone next time
            note(f"{exc} — the data check is not kept beside the data and will be redone next time")
    return index


def load_frames(data_dir: str | Path, fmt: DataFormat = CARLA, skip_bad: bool = False,
                warn: Callable[[str], None] | None = None, limit: int | None = None) -> Frames:
    """Read a data folder into memory (small folders, tests): the data check's rules, then every usable frame
    decoded into one array. Training streams instead (``stream_dataset``)."""
    index = index_dataset(data_dir, fmt, skip_bad=skip_bad, warn=warn, cache=False)
    frames = index.load(range(len(index) if limit is None else min(limit, len(index))))
    frames.skipped = list(index.skipped)
    return frames


CHANGED_SINCE_CHECK = "changed since the data check"


def stream_dataset(index: DataIndex, positions, batch_size: int, shuffle: bool, seed: int = 0,
                   parallel: int | None = None, repeat: bool = False, drop_remainder: bool = False,
                   weighted: bool = False):
    """A tf.data pipeline over the frames at ``positions``, read from disk: (float32 N×H×W×3 in [0, 1], uint8
    N×H×W class ids) batches. Shuffles the file list (each epoch anew) before decoding. ``repeat`` +
    ``drop_remainder``: every batch full, across epochs (data-parallel training splits each batch evenly).
    ``weighted`` with an ignore value: (frames, class ids with ignored pixels as 0, float32 N×H×W weights, 0 where
    ignored), which Keras' fit takes as per-pixel sample weights for the loss and the metrics.
    A frame that fails to decode (changed after the check) raises an error whose message holds
    ``CHANGED_SINCE_CHECK`` and the file's own one-line problem."""
    import tensorflow as tf

    if "keras" in sys.modules and getattr(sys.modules["keras"], "backend", None) is not None \
            and sys.modules["keras"].backend.backend() != "tensorflow":
        tf.config.set_visible_devices([], "GPU")  # tf.data only: leave the GPUs to the training backend
    height, width = index.size
    positions = [int(i) for i in positions]
    images, masks = index.paths(positions)

    def read(image_path, mask_path):
        try:
            return load_frame(Path(image_path.decode()), Path(mask_path.decode()), index.fmt)
        except UserError as exc:
            raise ValueError(f"{CHANGED_SINCE_CHECK}: {exc}") from None

    ignore = index.fmt.ignore_index

    def decode(image_path, mask_path):
        image, mask = tf.numpy_function(read, [image_path, mask_path], [tf.float32, tf.uint8])
        image, mask = tf.ensure_shape(image, (height, width, 3)), tf.ensure_shape(mask, (height, width))
        if not weighted or ignore is None:
            return image, mask
        counted = tf.not_equal(mask, ignore)
        return image, tf.where(counted, mask, tf.zeros_like(mask)), tf.cast(counted, tf.float32)

    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if shuffle:
        ds = ds.shuffle(len(positions), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(decode, num_parallel_calls=parallel or tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
