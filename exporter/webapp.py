"""``unet-export webapp``: a static web page that embeds a run's model (no build step), and its check in a browser.

The site holds the page (``exporter/web/app``), ``runners.mjs`` (the same model code the bench's web rows run),
the model file, ``model.json`` (its input, the labels and the palette), the runtime's files from the pinned npm
packages (``lib/``) and, when the run has evaluation frames, ``demo.png`` (the first one). LiteRT.js runs the
mobile file (camera bytes in, class map out, batch 1); ``--runtime mediapipe-web`` runs MediaPipe's
ImageSegmenter on the logits file instead (it refuses a class map; see ``runtimes/mediapipe_web_rt.py``).

``check_site`` opens the written page in the headless browser on the demo frame, reads back the class map it
drew and compares it with the Keras class map of the same frame; a screenshot is kept beside the site.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.classes import CARLA_CLASSES, CARLA_PALETTE
from exporter.contracts.rundir import RunDir
from exporter.errors import UserError
from exporter.parameters import IOType
from exporter.runtimes.mediapipe_web_rt import ARGMAX_REFUSAL
from exporter.runtimes.web import (
    SETUP_HINT,
    WEB_DIR,
    BrowserPage,
    browser_version,
    find_browser,
    node_modules,
    web_missing,
)
from exporter.tflite_io import NotTFLite, read_io

WEB_RUNTIMES = {"litertjs": ("@litertjs/core", "wasm"), "mediapipe-web": ("@mediapipe/tasks-vision", "cpu")}
# What each runtime needs of its npm package in the page (the loader picks among the WebAssembly builds itself).
LIB_FILES = {
    "litertjs": ("@litertjs/core/dist/index.js", "@litertjs/core/wasm", "@litertjs/wasm-utils/dist/index.js"),
    "mediapipe-web": ("@mediapipe/tasks-vision/vision_bundle.mjs", "@mediapipe/tasks-vision/wasm"),
}
SITE_MARKER = "model.json"


@dataclass(frozen=True)
class SiteCheck:
    """What the page drew on the demo frame, against the Keras class map."""

    agreement: float
    ms: float
    legend: tuple[str, ...]
    screenshot: Path
    browser: str
    model_line: str


def pick_model(run: RunDir, runtime: str, model: str | Path | None = None) -> Path:
    """The file the page embeds: the one named, else the run's first file for apps that ``runtime`` takes."""
    if model is not None:
        return check_model(Path(model), runtime)
    entries = [e for e in run.current_artifacts() if e.spec is not None and e.spec.embeds_in_apps]
    if runtime == "mediapipe-web":  # score channels; float input first (MediaPipe's web GPU delegate misreads uint8)
        entries = [e for e in entries if e.output != "class_map"]
        entries.sort(key=lambda e: (e.spec.io is not IOType.FLOAT32, e.spec.app_preference()))
    else:
        entries.sort(key=lambda e: e.spec.app_preference())
    if not entries:
        want = "--float-head" if runtime == "mediapipe-web" else "--io uint8 --argmax --float-head"
        raise UserError(f"{run.path}: no TFLite file for the web (a fixed batch, metadata"
                        f"{', score channels' if runtime == 'mediapipe-web' else ''}): "
                        f"unet-export tflite --quantize {want} --target web")
    return check_model(run.resolve(entries[0].path), runtime)


def check_model(path: Path, runtime: str) -> Path:
    """The file, if ``runtime`` can run it in a page: a TFLite file with a fixed batch (MediaPipe: score channels)."""
    try:
        inp, out = read_io(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (NotTFLite, OSError) as exc:
        raise UserError(f"{path}: {exc}") from None
    if inp.dynamic_batch:
        raise UserError(f"{path}: the batch is dynamic (-1): LiteRT.js and MediaPipe's GPU delegate take static shapes "
                        "only; export it with --target web (batch 1)")
    if len(inp.shape) != 4 or inp.shape[-1] != 3:
        raise UserError(f"{path}: expected an N×H×W×3 image input, got {list(inp.shape)}")
    if runtime == "mediapipe-web" and out.class_map:
        raise UserError(f"{path}: {ARGMAX_REFUSAL}")
    return path


def png_bytes(rgb: np.ndarray) -> bytes:
    """An H×W×3 uint8 image as a PNG (zlib only)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, dtype=np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _demo_frame(run: RunDir) -> np.ndarray | None:
    """The first evaluation frame as camera bytes (None without eval.npz)."""
    if not run.eval_path.is_file():
        return None
    from exporter.contracts.evaldata import load_eval

    return np.round(load_eval(run.eval_path).images[0] * 255).astype(np.uint8)


def write_site(run_dir: str | Path, out: str | Path, runtime: str = "litertjs", model: str | Path | None = None,
               backend: str | None = None) -> Path:
    """Write the site into ``out`` (a folder it wrote before is replaced; any other non-empty folder is refused)."""
    if runtime not in WEB_RUNTIMES:
        raise UserError(f"--runtime {runtime}: expected one of {', '.join(WEB_RUNTIMES)}")
    run, out = RunDir.at(run_dir), Path(out)
    if not run.path.is_dir():
        raise UserError(f"{run.path}: no such run folder")
    _, default_backend = WEB_RUNTIMES[runtime]
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SITE_MARKER).is_file())):
        raise UserError(f"{out}: exists and is not a site unet-export webapp wrote; name a new folder")
    path = pick_model(run, runtime, model)
    absent = [item for item in LIB_FILES[runtime] if not (node_modules() / item).exists()]
    if absent:  # the site needs the packages' files, not a browser nor Node.js
        raise UserError(f"webapp: {absent[0]} is not installed in {node_modules()}: {SETUP_HINT}")
    inp, output = read_io(path)
    labels = run.class_names() or list(CARLA_CLASSES)
    frame = _demo_frame(run)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise UserError(f"{out}: cannot write there ({exc.__class__.__name__})") from None
    try:
        for name in ("index.html", "app.mjs", "app.css"):
            shutil.copyfile(WEB_DIR / "app" / name, staging / name)
        shutil.copyfile(WEB_DIR / "runners.mjs", staging / "runners.mjs")
        shutil.copyfile(path, staging / path.name)
        for item in LIB_FILES[runtime]:
            source, target = node_modules() / item, staging / "lib" / item
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
        if frame is not None:
            (staging / "demo.png").write_bytes(png_bytes(frame))
        config = {"name": run.path.resolve().name, "model": path.name, "runtime": runtime,
                  "backend": backend or default_backend, "labels": labels,
                  "palette": CARLA_PALETTE[np.arange(len(labels)) % len(CARLA_PALETTE)].tolist(),
                  "input": {"height": inp.shape[1], "width": inp.shape[2], "dtype": inp.dtype, "scale": inp.scale,
                            "zero_point": inp.zero_point},
                  "output": "class_map" if output.class_map else "logits", "demo": frame is not None}
        (staging / SITE_MARKER).write_text(json.dumps(config, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{out}: could not write the site ({exc.__class__.__name__}: {exc})"[:300]) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_site(site: str | Path, run_dir: str | Path, screenshot: str | Path | None = None,
               backend: str | None = None) -> SiteCheck:
    """Open the site in the headless browser on its demo frame; the class map it drew against Keras's."""
    site, run = Path(site), RunDir.at(run_dir)
    missing = web_missing("puppeteer-core")
    if missing:
        raise UserError(f"webapp --check: {missing}")
    if not (site / "demo.png").is_file():
        raise UserError(f"{site}: no demo.png (the run has no eval.npz) to check the page on")
    from exporter.contracts.evaldata import load_eval

    reference = load_eval(run.eval_path).reference_map[0]
    screenshot = Path(screenshot) if screenshot else site.parent / f"{site.name}.png"
    page = BrowserPage()
    try:
        query = "index.html?image=demo.png" + (f"&backend={backend}" if backend else "")
        seen = page.ask(cmd="visit", browser=find_browser(), site=str(site.resolve()), path=query, timeout=300)
        if seen.get("state") != "done":
            raise UserError(f"{site}: the page failed in {seen.get('browser')}: {seen.get('error')}")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.ask(cmd="shot", path=str(screenshot.resolve()))
    except RuntimeError as exc:
        raise UserError(f"{site}: the page did not answer: {exc}") from None
    finally:
        page.close()
    last = seen["last"]
    drawn = np.asarray(last["classMap"], dtype=np.int64).reshape(last["height"], last["width"])
    if drawn.shape != reference.shape:
        raise UserError(f"{site}: the page drew {drawn.shape}, the Keras class map is {reference.shape}")
    return SiteCheck(float(np.mean(drawn == reference)), float(last["ms"]), tuple(seen.get("legend") or ()),
                     screenshot, browser_version(find_browser() or "") or seen.get("browser", "unknown"), seen.get("model", ""))
