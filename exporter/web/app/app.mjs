// The web app unet-export webapp writes: segment an image file, the demo frame or the camera with the exported
// model in the page (LiteRT.js, or MediaPipe's ImageSegmenter on a logits model), overlay the class map with the
// labels, show the time of each frame. model.json (written beside it) says the model, its input and the labels.
import {openRunner} from './runners.mjs';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
window.unetApp = {config: null, last: null, error: null};
let config = null;
let work = null;
let overlay = null;
const view = $('view');
let runner = null;
let source = null;
let cameraOn = false;

function fail(err) {
  $('error').textContent = `error: ${err.message || err}`;
  document.body.dataset.state = 'error';
  window.unetApp.error = String(err.message || err);
}

// The frame as the model's input: resized to its size, camera bytes as its input type takes them (MediaPipe takes
// the bytes and normalizes them itself from the file's metadata).
const INPUTS = {uint8: Uint8Array, int8: Int8Array, float32: Float32Array};

function input(frame) {
  const {width, height, dtype, scale, zero_point: zeroPoint} = config.input;
  const ctx = work.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(frame, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const type = config.runtime === 'mediapipe-web' ? 'uint8' : dtype;
  if (!INPUTS[type]) throw new Error(`input type ${dtype} is not supported by this page`);
  const out = new INPUTS[type](width * height * 3);
  const camera = type === 'uint8' && (config.runtime === 'mediapipe-web' || Math.abs(scale * 255 - 1) < 1e-6 && !zeroPoint);
  const [low, high] = type === 'int8' ? [-128, 127] : [0, 255];
  const quantize = (b) => Math.max(low, Math.min(high, Math.round(b / 255 / scale + zeroPoint)));
  const convert = type === 'float32' ? (b) => b / 255 : camera ? (b) => b : quantize;
  for (let i = 0, j = 0; j < out.length; i += 4, j += 3) {
    out[j] = convert(rgba[i]); out[j + 1] = convert(rgba[i + 1]); out[j + 2] = convert(rgba[i + 2]);
  }
  return out;
}

// Class ids from the output: a class map as it is, score channels by their argmax (a quantized score keeps its order).
function classMap(result) {
  const {data, shape} = result;
  const pixels = config.input.width * config.input.height;
  if (shape.length === 4 && shape[3] > 1) {
    const channels = shape[3];
    const ids = new Uint8Array(pixels);
    for (let p = 0; p < pixels; p++) {
      let best = 0;
      for (let c = 1; c < channels; c++) if (data[p * channels + c] > data[p * channels + best]) best = c;
      ids[p] = best;
    }
    return ids;
  }
  return Uint8Array.from(data.subarray ? data.subarray(0, pixels) : data.slice(0, pixels), Number);
}

function draw(frame, ids) {
  const {width, height} = config.input;
  const ctx = view.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.globalAlpha = 1;
  ctx.drawImage(frame, 0, 0, view.width, view.height);
  const colours = new ImageData(width, height);
  const counts = new Map();
  ids.forEach((id, p) => {
    const [r, g, b] = config.palette[id % config.palette.length];
    colours.data.set([r, g, b, 255], 4 * p);
    counts.set(id, (counts.get(id) || 0) + 1);
  });
  overlay.getContext('2d').putImageData(colours, 0, 0);
  ctx.globalAlpha = Number($('alpha').value) / 100;
  ctx.drawImage(overlay, 0, 0, view.width, view.height);
  ctx.globalAlpha = 1;
  $('legend').replaceChildren(...[...counts].sort((a, b) => b[1] - a[1]).map(([id, count]) => {
    const li = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = `rgb(${config.palette[id % config.palette.length].join(',')})`;
    li.append(swatch, `${config.labels[id] ?? id} ${(100 * count / ids.length).toFixed(1)}%`);
    return li;
  }));
}

async function segment(frame) {
  const data = input(frame);
  const started = performance.now();
  const result = await runner.run(data, [1, config.input.height, config.input.width, 3]);
  const ms = performance.now() - started;
  const ids = classMap(result);
  draw(frame, ids);
  $('timing').textContent = `${ms.toFixed(1)} ms a frame (${runner.backend})`;
  window.unetApp.last = {ms, width: config.input.width, height: config.input.height, classMap: Array.from(ids)};
  document.body.dataset.state = 'done';
  return window.unetApp.last;
}

async function image(url) {
  const blob = await (await fetch(url)).blob();
  source = await createImageBitmap(blob);
  return segment(source);
}

async function camera() {
  if (cameraOn) { cameraOn = false; return; }
  const video = $('video');
  video.srcObject = await navigator.mediaDevices.getUserMedia({video: {facingMode: 'environment'}});
  await video.play();
  cameraOn = true;
  const loop = async () => {
    if (!cameraOn) { video.srcObject.getTracks().forEach((t) => t.stop()); return; }
    try {
      await segment(video);
      requestAnimationFrame(loop);
    } catch (err) {
      cameraOn = false;
      fail(err);
    }
  };
  loop();
}

try {
  const response = await fetch('./model.json');
  if (!response.ok) throw new Error(`model.json: HTTP ${response.status}`);
  config = await response.json();
  work = new OffscreenCanvas(config.input.width, config.input.height);
  overlay = new OffscreenCanvas(config.input.width, config.input.height);
  Object.assign(window.unetApp, {config, image, segment});
  view.width = config.input.width * 4;
  view.height = config.input.height * 4;
  const backend = params.get('backend') || config.backend;
  runner = await openRunner(config.runtime, backend, `./${config.model}`, Math.min(4, navigator.hardwareConcurrency || 1),
                            './lib');
  $('model').textContent = `${config.name}: ${config.model} on ${runner.backend}, ${config.input.width}×${config.input.height} ` +
                           `${config.input.dtype} in, ${config.labels.length} classes`;
  document.body.dataset.state = 'ready';
  $('file').addEventListener('change', (e) => e.target.files[0] && image(URL.createObjectURL(e.target.files[0])).catch(fail));
  $('demo').addEventListener('click', () => image('./demo.png').catch(fail));
  $('camera').addEventListener('click', () => camera().catch(fail));
  $('alpha').addEventListener('input', () => source && segment(source).catch(fail));
  const first = params.get('image') || (config.demo ? './demo.png' : null);
  if (first) await image(first);
} catch (err) {
  fail(err);
}
