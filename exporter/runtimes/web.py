"""The browser as a device: what the web runtimes (``litertjs_rt``, ``onnxruntime_web_rt``, ``mediapipe_web_rt``)
share. A web row runs in a real headless Chromium: ``exporter/web/driver.mjs`` (Node.js, puppeteer-core) starts
the browser the user has (``$UNET_BROWSER``, else ``chromium``/``google-chrome`` on the PATH; never a browser
of its own), serves a page from loopback that loads the model with the runtime's npm package, and answers this
adapter line by line. Frames travel as the model's input bytes through a work folder; the page times its own
calls (``performance.now``, the bench's warm-up and floors), so no sample holds the transport.

Devices: ``cpu`` is the runtime's WebAssembly backend, ``gpu`` its WebGPU backend (MediaPipe: its GPU delegate,
WebGL). Where the machine has no GPU, Chromium's WebGPU and WebGL are SwiftShader, a software rasterizer: the
row says so (``browser.software_rasterizer``) and its times describe no GPU.

The npm packages are pinned in ``exporter/web/package-lock.json`` and installed by ``make setup-web`` (``npm ci``
there) or into ``$UNET_WEB_DIR`` (a folder holding ``node_modules``); nothing here imports a framework.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from exporter.runtimes.base import (
    Loaded,
    ModelLoadError,
    Runtime,
    RuntimeUnavailable,
    TensorInfo,
    check_images,
    decode_output,
    one_line,
    quantize_input,
)
from exporter.tflite_io import NotTFLite, read_io

WEB_DIR = Path(__file__).resolve().parent.parent / "web"  # driver.mjs, the pages, package.json + lock
WEB_DIR_ENV = "UNET_WEB_DIR"  # a folder whose node_modules holds the pinned packages (default: WEB_DIR's)
BROWSER_ENV = "UNET_BROWSER"  # the Chromium or Chrome to run (default: the first on the PATH)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
SETUP_HINT = ("make setup-web in a checkout, unet-bench setup-web where the package is installed: the pinned npm "
              "packages, and Chromium from the distribution (apt-get install chromium)")
REPLY = "REPLY "
SOFTWARE_ADAPTERS = ("swiftshader", "llvmpipe", "software", "basic render")


def user_web_dir() -> Path:
    """Where unet-bench setup-web installs the packages from a wheel (~/.cache/unet-export/web)."""
    try:
        return Path.home() / ".cache" / "unet-export" / "web"
    except RuntimeError:  # no HOME and no passwd entry (a bare container)
        return Path(tempfile.gettempdir()) / "unet-export-web"


def node_modules() -> Path:
    """Where the web packages are installed (absolute): ``$UNET_WEB_DIR``, else beside the pages (a checkout: make
    setup-web), else the user's cache (an installed wheel: unet-bench setup-web)."""
    if os.environ.get(WEB_DIR_ENV):
        return Path(os.environ[WEB_DIR_ENV]).resolve() / "node_modules"
    here, cached = WEB_DIR / "node_modules", user_web_dir() / "node_modules"
    return here if here.is_dir() or not cached.is_dir() else cached


def install_packages(folder: Path) -> Path:
    """``npm ci`` of the pinned packages (package.json and package-lock.json of the pages) into ``folder``; no
    install scripts, no browser download. RuntimeError with npm's last line when it fails."""
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed (apt-get install nodejs npm)")
    if folder.resolve() == WEB_DIR.resolve():
        raise RuntimeError(f"{folder} holds the pages themselves: in a checkout, make setup-web installs there")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(WEB_DIR / name, folder / name)
    proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                          cwd=folder, capture_output=True, text=True)
    if proc.returncode:
        tail = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"npm ci failed in {folder}: {tail[-1] if tail else proc.returncode}")
    return folder / "node_modules"


def find_browser() -> str | None:
    """The browser to run: ``$UNET_BROWSER`` if set (None if it is not an executable), else the first on the PATH."""
    named = os.environ.get(BROWSER_ENV)
    if named:
        return os.path.abspath(named) if os.path.isfile(named) and os.access(named, os.X_OK) else shutil.which(named)
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


@functools.lru_cache(maxsize=8)
def _version_line(executable: str) -> str | None:
    """What ``EXE --version`` prints, on one line (None if it cannot be run or prints nothing)."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(out.split()) or None


def browser_version(executable: str) -> str:
    """'Chromium 156.0.8078.114 built on Debian …', or 'unknown'."""
    return _version_line(executable) or "unknown"


def npm_version(package: str) -> str | None:
    """The installed version of an npm package (None if absent)."""
    try:
        return json.loads((node_modules() / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


WEB_PACKAGES = ("@litertjs/core", "onnxruntime-web", "@mediapipe/tasks-vision", "puppeteer-core")


def web_environment() -> dict | None:
    """The browser and the npm packages the web rows would use (None where none is installed)."""
    packages = {name: version for name in WEB_PACKAGES if (version := npm_version(name))}
    if not packages:
        return None
    browser = find_browser()
    return {"browser": browser_version(browser) if browser else None, "executable": browser,
            "node": _version_line("node"), "packages": packages}


def web_missing(package: str) -> str | None:
    """Why a web runtime cannot run here (None: it can), with the line that installs what is missing."""
    if shutil.which("node") is None:
        return f"Node.js is not installed (it drives the browser): apt-get install nodejs; then {SETUP_HINT}"
    absent = [p for p in (package, "puppeteer-core") if npm_version(p) is None]
    if absent:
        return f"{', '.join(absent)} not installed in {node_modules()}: {SETUP_HINT}"
    if find_browser() is None:
        named = os.environ.get(BROWSER_ENV)
        return (f"${BROWSER_ENV}={named} is not an executable" if named
                else f"no Chromium or Chrome on the PATH (or set ${BROWSER_ENV}): {SETUP_HINT}")
    return None


def software_rasterizer(gpu: dict, backend: str = "webgpu") -> bool:
    """Whether the page's GPU for ``backend`` is a software rasterizer: the WebGPU adapter (a fallback adapter
    counts), or the WebGL renderer for MediaPipe's GPU delegate and where there is no WebGPU adapter."""
    adapter = gpu.get("webgpu")
    if backend == "webgpu" and adapter:
        text = " ".join(str(v) for k, v in adapter.items() if k != "fallback").lower()
        return bool(adapter.get("fallback")) or any(name in text for name in SOFTWARE_ADAPTERS)
    return any(name in str(gpu.get("webgl") or "").lower() for name in SOFTWARE_ADAPTERS)


class BrowserPage:
    """One driver process: a headless browser with one page that holds one model."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="unet-web-"))
        self._log = open(self.work / "driver.log", "w+b")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(["node", str(WEB_DIR / "driver.mjs")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=self.work,
                                     env={**os.environ, "UNET_WEB_MODULES": str(node_modules())})
        atexit.register(self.close)

    def ask(self, **command) -> dict:
        """Send one command, wait for its reply; RuntimeError with the driver's one line when it fails."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the browser driver has exited ({self._tail()})")
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                reply = json.loads(line[len(REPLY):])
                if not reply.get("ok"):
                    raise RuntimeError(reply.get("error") or "the page failed without a message")
                return reply
        raise RuntimeError(f"the browser driver exited with code {self.proc.wait()} ({self._tail()})")

    def _tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else "no output"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "close"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
        self._log.close()
        shutil.rmtree(self.work, ignore_errors=True)


class WebRuntime(Runtime):
    """A runtime in a browser page. Subclasses name the npm ``package``, the page's runtime id ``page_runtime``
    and the page backend of each device."""

    package: str = ""
    page_runtime: str = ""
    backends: dict[str, str] = {"cpu": "wasm", "gpu": "webgpu"}
    order = 60
    default = False  # a browser a row: run when named (--runtimes litertjs,… or --runtimes web)
    in_process = False  # the model runs in the browser: this process's memory is not the row's
    group = "web"

    def __init__(self) -> None:
        super().__init__()
        self._page: BrowserPage | None = None
        self._peak: float | None = None
        self._hint = ""

    @classmethod
    def available(cls) -> str | None:
        return web_missing(cls.package)

    @classmethod
    def install_hint(cls) -> str:
        return SETUP_HINT

    @classmethod
    def packages(cls) -> dict[str, tuple[str, ...]]:
        return {}  # npm packages, not pip distributions: the row's runtime_version says which

    def version(self) -> str:
        return npm_version(self.package) or "unknown"

    def _file_io(self, path: Path) -> tuple[TensorInfo | None, TensorInfo | None]:
        """The file's own input and output (quantization included) where this process can read them."""
        if path.suffix.lower() not in (".tflite", ".lite"):
            return None, None
        try:
            inp, out = read_io(path)
        except NotTFLite as exc:
            raise ModelLoadError(f"{path.name}: {exc}") from exc
        return (TensorInfo.of(inp.shape, inp.dtype, inp.scale, inp.zero_point, inp.name),
                TensorInfo.of(out.shape, out.dtype, out.scale, out.zero_point, out.name, output=True))

    def _check_file(self, path: Path, file_in: TensorInfo | None, file_out: TensorInfo | None) -> None:
        """Refuse, before the browser starts, a file this runtime would answer wrongly (subclasses)."""

    def _page_io(self, opened: dict, file_in: TensorInfo | None,
                 file_out: TensorInfo | None) -> tuple[TensorInfo, TensorInfo]:
        """The I/O the page reported, with the file's quantization (ONNX: a uint8 input is camera bytes)."""
        inp, out = opened["input"], opened["output"]
        in_dtype = inp["dtype"]
        scale, zero_point = ((file_in.scale, file_in.zero_point) if file_in is not None
                             else ((1 / 255, 0) if in_dtype == "uint8" else (0.0, 0)))
        if in_dtype in ("int8", "int16") and not scale:
            raise ModelLoadError(f"{in_dtype} input without quantization parameters is unsupported")
        out_scale, out_zero = (file_out.scale, file_out.zero_point) if file_out is not None else (0.0, 0)
        return (TensorInfo.of(inp["shape"], in_dtype, scale, zero_point),
                TensorInfo.of(out["shape"], out["dtype"], out_scale, out_zero, output=True))

    def _open(self, path: Path, device: str, threads: int | None) -> Loaded:
        backend = self.backends.get(device)
        if backend is None:
            raise RuntimeUnavailable(f"{self.name} has no {device} backend")
        file_in, file_out = self._file_io(path)
        self._check_file(path, file_in, file_out)
        dynamic = file_in is not None and bool(file_in.shape) and file_in.shape[0] is None
        self._hint = " (the file's batch is dynamic: export it with --target web)" if dynamic else ""  # said first
        browser = find_browser()
        threads = threads or 1
        self.close()  # a second load: one browser at a time
        self._page = BrowserPage()
        try:
            opened = self._page.ask(cmd="open", browser=browser, runtime=self.page_runtime, backend=backend,
                                    model=str(path.resolve()), threads=threads, work=str(self._page.work))
            inp, out = self._page_io(opened, file_in, file_out)
        except RuntimeError as exc:
            self.close()
            raise ModelLoadError(f"{path.name}: {self.name} {backend} in {Path(browser).name}{self._hint}: "
                                 f"{one_line(exc, 200)}") from exc
        except BaseException:
            self.close()
            raise
        gpu = opened.get("gpu") or {}
        adapter = gpu.get("webgpu") or {}
        software = software_rasterizer(gpu, backend)
        browser_facts = {
            "name": Path(browser).name, "version": browser_version(browser), "executable": browser,
            "backend": opened["backend"], "user_agent": opened.get("user_agent"),
            "webgpu_adapter": " ".join(str(adapter.get(k)) for k in ("vendor", "architecture", "description")
                                       if adapter.get(k)) or None,
            "webgl_renderer": gpu.get("webgl"), "software_rasterizer": software,
            "cross_origin_isolated": opened.get("cross_origin_isolated"),
        }
        if device == "gpu" and software:
            browser_facts["note"] = (f"{'WebGPU' if backend == 'webgpu' else 'WebGL'} here is a software rasterizer "
                                     "(SwiftShader) on the CPU: a check of the GPU path's answers, not a GPU's speed")
        facts = opened.get("facts") or {}
        loaded_facts = {"browser": browser_facts}
        if facts.get("fully_accelerated") is not None:
            loaded_facts["fully_accelerated"] = bool(facts["fully_accelerated"])
        return Loaded(path, device, int(facts.get("threads") or threads), inp, out, (opened["backend"],),
                      "as exported", loaded_facts)

    def _frames(self, images: np.ndarray) -> list[int]:
        """Write the frames as the page's input bytes; their shape."""
        loaded = self._require_loaded()
        data = quantize_input(check_images(images), loaded.input.dtype, loaded.input.scale, loaded.input.zero_point)
        data.tofile(self._page.work / "frames.bin")
        return list(data.shape)

    def predict(self, images: np.ndarray) -> np.ndarray:
        loaded = self._require_loaded()
        shape = self._frames(images)
        try:
            reply = self._page.ask(cmd="run", frames="frames.bin", shape=shape)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.name} in the browser{self._hint}: {one_line(exc, 200)}") from exc
        raw = np.fromfile(self._page.work / reply["file"], dtype=np.dtype(reply["dtype"]))
        raw = raw.reshape(reply["shape"])
        return decode_output(raw, loaded.output.scale, loaded.output.zero_point)

    def time_calls(self, images: np.ndarray, warmup: int, min_runs: int, min_seconds: float) -> list[float]:
        shape = self._frames(images)
        reply = self._page.ask(cmd="time", frames="frames.bin", shape=shape, warmup=warmup, minRuns=min_runs,
                               minSeconds=min_seconds, maxRuns=100_000)
        self._peak = reply.get("peak_rss_mb") or self._peak
        return [float(s) for s in reply["samples"]]

    def peak_memory_mb(self) -> float | None:
        """The browser renderer's peak resident memory (the page's WASM heap and the model live there)."""
        return self._peak

    def close(self) -> None:
        if self._page is not None:
            self._page.close()
            self._page = None
