"""The browser as a device: web rows in unet-bench (LiteRT.js, onnxruntime-web, MediaPipe's ImageSegmenter, each on
WebAssembly and WebGPU/GPU in a real headless Chromium), static shapes for web files, and the web app.

Needs Chromium (Debian's package), Node.js and the npm packages of exporter/web/package-lock.json: ``make test``
installs them (``make setup-web``). Where they are missing, the browser tests skip, saying what to install.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exporter.cli.bench import cli as bench_cli
from exporter.cli.main import cli
from exporter.contracts.bench_json import BenchRow, SegmentationScores
from exporter.runtimes.web import web_missing
from exporter.tflite_io import read_io

FAST = ["--min-runs", "3", "--min-seconds", "0", "--warmup", "1", "--threads", "2"]
MOBILE = "unet_int8_floathead_uint8io_argmax_b1.tflite"
LOGITS = "unet_int8_floathead_b1.tflite"  # what MediaPipe's ImageSegmenter takes (float input: its GPU delegate too)
UINT8_LOGITS = "unet_int8_floathead_uint8io_b1.tflite"  # MediaPipe's web GPU delegate answers it wrongly, silently
DYNAMIC = "unet_fp32.tflite"  # a dynamic batch: LiteRT.js refuses it
MISSING = web_missing("@litertjs/core") or web_missing("onnxruntime-web") or web_missing("@mediapipe/tasks-vision")
needs_browser = pytest.mark.skipif(MISSING is not None, reason=f"web rows not run: {MISSING}")


@pytest.fixture(scope="module")
def web_run(tiny_run, blocks_dir, tmp_path_factory):
    """The tiny run with the files a web app takes (batch 1) beside a dynamic-batch one and an ONNX file, packed;
    the --target web export's output."""
    from exporter.contracts.export_spec import HEAD, ExportSpec
    from exporter.export.api import ExportContext
    from exporter.pack_builder import PackContents, build_pack

    run = tmp_path_factory.mktemp("web") / "run"
    run.mkdir()
    for name in ("model.keras", "config.json"):
        shutil.copyfile(tiny_run / name, run / name)
    target = CliRunner().invoke(cli, ["tflite", "--model", str(run / "model.keras"), "--data", str(blocks_dir),
                                      "--quantize", "--float-head", "--target", "web",
                                      "--validation-samples", "8", "--calibration-samples", "20"])
    assert target.exit_code == 0, target.output
    ctx = ExportContext.open(run / "model.keras", blocks_dir, validation_samples=8, log=None)
    ctx.export(ExportSpec("tflite", "int8", io="uint8", argmax=True, float_scope=HEAD, static_batch=1), run / MOBILE,
               calibration_samples=20)
    ctx.export(ExportSpec("tflite", "int8", io="uint8", float_scope=HEAD, static_batch=1), run / UINT8_LOGITS,
               calibration_samples=20)
    ctx.export(ExportSpec("tflite"), run / DYNAMIC)
    ctx.export(ExportSpec("onnx", "int8", float_scope=HEAD), run / "unet_int8_floathead.onnx", calibration_samples=20)
    pack = run.parent / "web.pack"
    build_pack(run, blocks_dir, pack, PackContents(frames=4), context=ctx)
    return run, pack, target.output


@pytest.fixture(scope="module")
def web_bench(web_run, tmp_path_factory) -> dict:
    """unet-bench run on the web runtimes only, CPU (WebAssembly) and GPU (WebGPU; SwiftShader without a GPU)."""
    _, pack, _ = web_run
    out = tmp_path_factory.mktemp("webbench") / "web.json"
    result = CliRunner().invoke(bench_cli, ["run", str(pack), "--runtimes", "web", "--devices", "cpu,gpu",
                                            "--json", str(out), *FAST])
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    return {"rows": {(r["artifact"], r["runtime"], r["device"]): r for r in bench["results"]},
            "environment": bench["environment"], "output": result.output}


def test_target_web_fixes_the_batch_with_one_line(web_run):
    run, _, output = web_run
    assert "--target web: batch fixed to 1 (LiteRT.js and MediaPipe's GPU delegate" in output
    inp, out = read_io(run / LOGITS)
    assert inp.shape == (1, 32, 32, 3) and inp.dtype == "float32" and out.shape == (1, 32, 32, 23)
    assert read_io(run / DYNAMIC)[0].dynamic_batch


def test_tflite_io_reads_what_litert_reads(web_run):
    """The stdlib flatbuffer reader (the device side has no TFLite in the process of a web row) against LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    run, _, _ = web_run
    for name in (MOBILE, LOGITS, UINT8_LOGITS, DYNAMIC):
        inp, out = read_io(run / name)
        interpreter = Interpreter(str(run / name))
        for mine, theirs in ((inp, interpreter.get_input_details()[0]), (out, interpreter.get_output_details()[0])):
            assert mine.shape == tuple(theirs["shape_signature"]) and mine.dtype == np.dtype(theirs["dtype"]).name
            assert (mine.scale, mine.zero_point) == pytest.approx(theirs["quantization"])
    assert read_io(run / MOBILE)[1].class_map and not read_io(run / LOGITS)[1].class_map
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        read_io(b"\x00" * 64)


def test_argmax_metadata_does_not_claim_segmentation_masks(web_run):
    """The class-map file keeps its labels but is not described as MediaPipe's score masks; the logits file is."""
    from exporter.export.mediapipe_compat import generated
    from exporter.export.tflite_metadata import _metadata_buffer, read_metadata

    run, _, _ = web_run
    fb = generated("metadata_schema_py_generated")
    kinds = {}
    for name in (MOBILE, LOGITS):
        data = (run / name).read_bytes()
        assert len(read_metadata(data)["labels"]) == 23
        output = fb.ModelMetadata.GetRootAs(_metadata_buffer(data), 0).SubgraphMetadata(0).OutputTensorMetadata(0)
        kinds[name] = (output.Name().decode(), output.Content().ContentPropertiesType())
    assert kinds[LOGITS] == ("segmentation_masks", fb.ContentProperties.ImageProperties)
    assert kinds[MOBILE] == ("class_map", fb.ContentProperties.FeatureProperties)


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js here: the first reason would be that")
def test_web_rows_need_naming_and_say_how_to_install(monkeypatch):
    from exporter.bench.runner import BenchSettings
    from exporter.runtimes import RUNTIMES, runtimes_for

    assert "litertjs" not in runtimes_for("tflite") and "onnxruntime-web" not in runtimes_for("onnx")
    assert BenchSettings(runtimes=("litert", "web")).runtimes == ("litert", "litertjs", "onnxruntime-web",
                                                                  "mediapipe-web")
    monkeypatch.setenv("UNET_BROWSER", "/nonexistent/chromium")
    assert RUNTIMES["litertjs"].available() == "$UNET_BROWSER=/nonexistent/chromium is not an executable"
    monkeypatch.delenv("UNET_BROWSER")
    monkeypatch.setenv("UNET_WEB_DIR", "/nonexistent")
    reason = RUNTIMES["mediapipe-web"].available()
    assert "make setup-web" in reason and "not installed in /nonexistent/node_modules" in reason


def test_a_web_row_far_below_its_export_agreement_names_runtime_and_backend():
    from exporter.drift import beyond_export

    browser = {"name": "chromium", "version": "Chromium 156.0.8078.114", "backend": "onnxruntime-web webgpu "
               "(ort.min.mjs)", "software_rasterizer": True}
    row = BenchRow("unet_int8_floathead.onnx", "ok", runtime="onnxruntime-web", device="gpu", browser=browser,
                   accuracy=SegmentationScores(0.1, 0.02, [0.02], 0.06), export_agreement=0.988)
    note = beyond_export(row, [row])
    assert "6.00% here against 98.80% when the file was exported" in note
    assert "onnxruntime-web webgpu (ort.min.mjs) in Chromium 156.0.8078.114 on SwiftShader (software), with no error" \
        in note
    assert BenchRow.from_dict(row.to_dict()).browser == browser


@needs_browser
def test_web_rows_run_in_the_browser_and_score_against_keras(web_run, web_bench):
    run, _, _ = web_run
    rows, env = web_bench["rows"], web_bench["environment"]
    assert env["web"]["browser"].startswith(("Chromium", "Google Chrome")) and "@litertjs/core" in env["web"]["packages"]
    for key in ((MOBILE, "litertjs", "cpu"), (LOGITS, "litertjs", "cpu"), (LOGITS, "mediapipe-web", "cpu"),
                ("unet_int8_floathead.onnx", "onnxruntime-web", "cpu"), (MOBILE, "litertjs", "gpu"),
                ("unet_int8_floathead.onnx", "onnxruntime-web", "gpu")):
        row = rows[key]
        assert row["status"] == "ok", (key, row["reason"])
        # timed in the page: the bench's floors, raw samples; the renderer's memory
        assert row["latency_ms"]["n"] >= 3 and len(row["latency_samples_ms"]) == row["latency_ms"]["n"]
        assert row["peak_rss_mb"] > 10 and row["cold_start_ms"] > 0
        browser = row["browser"]
        assert browser["version"] == env["web"]["browser"] and browser["cross_origin_isolated"] is True
        assert row["providers"][0].startswith(("LiteRT.js", "onnxruntime-web", "MediaPipe ImageSegmenter"))
        # the same file's agreement with Keras when it was exported, within a point (other kernels, same model)
        assert row["accuracy"]["agreement_vs_reference"] > row["export_agreement"] - 0.01, (key, row)
    assert rows[(MOBILE, "litertjs", "cpu")]["threads"] == 2
    gpu = rows[(MOBILE, "litertjs", "gpu")]["browser"]
    if gpu["software_rasterizer"]:  # no GPU here: Chromium's WebGPU is SwiftShader, and the row says so
        assert "swiftshader" in (gpu["webgpu_adapter"] or "").lower() and "software rasterizer" in gpu["note"]
    # LiteRT.js runs static shapes only: the dynamic-batch file fails with its message, not a silent answer
    dynamic = rows[(DYNAMIC, "litertjs", "cpu")]
    assert dynamic["status"] == "failed" and "-1, 32, 32, 3" in dynamic["reason"], dynamic
    assert "the file's batch is dynamic: export it with --target web" in dynamic["reason"]
    # MediaPipe would answer an all-zero mask for the class-map file: refused, saying why
    argmax = rows[(MOBILE, "mediapipe-web", "cpu")]
    assert argmax["status"] == "failed" and "all-zero mask" in argmax["reason"]


@needs_browser
def test_mediapipe_web_runs_every_file_that_claims_to_be_for_it(web_run, web_bench):
    """Every TFLite file whose metadata describes segmentation masks runs in MediaPipe's web ImageSegmenter at its
    export-time agreement (CPU delegate; the GPU delegate where it takes the file)."""
    from exporter.export.mediapipe_compat import generated
    from exporter.export.tflite_metadata import _metadata_buffer

    run, _, _ = web_run
    fb = generated("metadata_schema_py_generated")
    claims = []
    for path in sorted(run.glob("*.tflite")):
        buffer = _metadata_buffer(path.read_bytes())
        if buffer is None:
            continue
        output = fb.ModelMetadata.GetRootAs(buffer, 0).SubgraphMetadata(0).OutputTensorMetadata(0)
        if output.Name() == b"segmentation_masks":
            claims.append(path.name)
    assert LOGITS in claims and MOBILE not in claims
    for name in claims:
        row = web_bench["rows"][(name, "mediapipe-web", "cpu")]
        assert row["status"] == "ok", (name, row["reason"])
        assert row["accuracy"]["agreement_vs_reference"] > row["export_agreement"] - 0.01, (name, row)
    gpu = web_bench["rows"][(LOGITS, "mediapipe-web", "gpu")]
    assert gpu["status"] == "ok" and gpu["accuracy"]["agreement_vs_reference"] > gpu["export_agreement"] - 0.01


@needs_browser
def test_a_silent_wrong_answer_in_the_browser_is_flagged(web_bench):
    """MediaPipe 1.1.0's web GPU delegate answers a uint8-input logits model wrongly, with no error (its CPU delegate
    and the float-input file are right): the row is ok by status, and the bench names it, its runtime and backend."""
    wrong = web_bench["rows"][(UINT8_LOGITS, "mediapipe-web", "gpu")]
    right = web_bench["rows"][(UINT8_LOGITS, "mediapipe-web", "cpu")]
    assert right["accuracy"]["agreement_vs_reference"] > right["export_agreement"] - 0.01
    if wrong["status"] == "ok" and wrong["accuracy"]["agreement_vs_reference"] > wrong["export_agreement"] - 0.01:
        pytest.skip("this MediaPipe's GPU delegate reads a uint8 input right: nothing silent left to flag")
    assert wrong["status"] == "ok", wrong["reason"]  # no error: that is the point
    flagged = " ".join(web_bench["output"].split())
    assert (f"{UINT8_LOGITS} on mediapipe-web/gpu: pixel agreement "
            f"{wrong['accuracy']['agreement_vs_reference']:.2%} here") in flagged
    assert "when the file was exported: MediaPipe ImageSegmenter GPU delegate in Chromium" in flagged


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@needs_browser
@pytest.mark.parametrize("runtime", ["litertjs", "mediapipe-web"])
def test_webapp_overlay_matches_the_keras_class_map(web_run, runtime, tmp_path):
    run, _, _ = web_run
    assert (run / "eval.npz").is_file()  # written by the pack: the demo frame and the Keras class map
    site = tmp_path / "site"
    result = CliRunner().invoke(cli, ["webapp", str(run), "--out", str(site), "--runtime", runtime, "--check"])
    assert result.exit_code == 0, result.output
    config = json.loads((site / "model.json").read_text())
    assert config["model"] == (MOBILE if runtime == "litertjs" else LOGITS)
    assert {"index.html", "app.mjs", "runners.mjs", "demo.png", config["model"]} <= {p.name for p in site.iterdir()}
    line = next(line for line in result.output.splitlines() if line.startswith("checked in"))
    agreement = float(line.split("agrees with Keras on ")[1].split("%")[0]) / 100
    assert agreement > 0.9, line
    assert _png_size(tmp_path / "site.png") == (1000, 700)


def test_webapp_refuses_what_the_page_would_answer_wrongly(web_run, tmp_path):
    run, _, _ = web_run
    for args, message in ((["--runtime", "mediapipe-web", "--model", str(run / MOBILE)], "all-zero mask"),
                          (["--model", str(run / DYNAMIC)], "the batch is dynamic (-1)")):
        result = CliRunner().invoke(cli, ["webapp", str(run), "--out", str(tmp_path / "s"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = CliRunner().invoke(cli, ["webapp", str(run), "--out", str(tmp_path / "mine")])
    assert result.exit_code == 2 and "is not a site unet-export webapp wrote" in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.skipif(shutil.which("npm") is None, reason="no npm here")
def test_setup_web_installs_the_pinned_packages_where_it_is_told(tmp_path, monkeypatch):
    """Where the package is installed from a wheel (no checkout, no make): the lock file travels in the wheel."""
    from exporter.cli.bench import cli as bench
    from exporter.runtimes.web import npm_version

    result = CliRunner().invoke(bench, ["setup-web", "--dir", str(tmp_path / "web")])
    assert result.exit_code == 0, result.output
    assert f"export UNET_WEB_DIR={(tmp_path / 'web').resolve()}" in result.output
    monkeypatch.setenv("UNET_WEB_DIR", str(tmp_path / "web"))
    from exporter.runtimes.web import WEB_DIR

    lock = json.loads((WEB_DIR / "package-lock.json").read_text())["packages"]
    for name in ("@litertjs/core", "onnxruntime-web", "@mediapipe/tasks-vision", "puppeteer-core"):
        assert npm_version(name) == lock[f"node_modules/{name}"]["version"]


@needs_browser
def test_a_fixed_batch_above_one_runs_any_number_of_frames(web_run, tmp_path):
    """A file with batch 2 given 3 frames: the page pads the last call and drops its extra output, as LiteRT does."""
    from exporter.contracts.evaldata import load_eval
    from exporter.contracts.export_spec import ExportSpec
    from exporter.export.api import load_keras_model
    from exporter.export.tflite_export import convert_tflite
    from exporter.runtimes import get_runtime

    run, _, _ = web_run
    path = tmp_path / "unet_fp32_b2.tflite"
    path.write_bytes(convert_tflite(load_keras_model(run / "model.keras"), ExportSpec("tflite", static_batch=2)))
    evaldata = load_eval(run / "eval.npz")
    runtime = get_runtime("litertjs")
    try:
        runtime.load(path, device="cpu", threads=1)
        logits = runtime.predict(evaldata.images[:3])
    finally:
        runtime.close()
    assert logits.shape == (3, *evaldata.reference_logits.shape[1:])
    assert np.mean(np.argmax(logits, -1) == evaldata.reference_map[:3]) > 0.999
