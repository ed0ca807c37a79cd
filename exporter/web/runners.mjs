// One model on one web runtime, the same way for the bench page and the web app: openRunner(runtime, backend,
// modelUrl, threads, lib) → {input, output, backend, facts, run(typed, shape) → {data, shape, dtype}}.
// ``lib``: where the npm packages are served (node_modules for the bench, the site's lib/ for the app).
// Inputs arrive in the model's own input type (the caller quantizes); outputs leave as the runtime gives them.

export const RUNTIMES = ['litertjs', 'onnxruntime-web', 'mediapipe-web'];
// onnxruntime-web's WebGPU build. Not its default bundle (ort.bundle.min.mjs, what `import 'onnxruntime-web'`
// gives): 1.30.0's default WebGPU path answered an int8 QDQ model at 6% agreement with no error
// (microsoft/onnxruntime#32578); ort.webgpu.min.mjs ran it at the native agreement.
export const ORT_BUNDLES = {wasm: 'ort.wasm.min.mjs', webgpu: 'ort.webgpu.min.mjs'};

export async function openRunner(runtime, backend, model, threads, lib) {
  const open = {litertjs: openLiteRt, 'onnxruntime-web': openOrt, 'mediapipe-web': openMediaPipe}[runtime];
  if (!open) throw new Error(`unknown web runtime ${runtime} (known: ${RUNTIMES.join(', ')})`);
  return open(backend, model, threads || 1, lib);
}

let liteRtLoaded = null;

async function openLiteRt(backend, model, threads, lib) {
  const lrt = await import(`${lib}/@litertjs/core/dist/index.js`);
  const threaded = threads > 1 && self.crossOriginIsolated === true;
  if (!liteRtLoaded) liteRtLoaded = lrt.loadLiteRt(`${lib}/@litertjs/core/wasm/`, {threads: threaded});
  await liteRtLoaded;
  const options = {accelerator: backend};
  if (backend === 'wasm') options.cpuOptions = {numThreads: threaded ? threads : 1};
  const compiled = await lrt.loadAndCompile(model, options);
  const [inp] = compiled.getInputDetails();
  const [out] = compiled.getOutputDetails();
  return {
    input: {dtype: inp.dtype, shape: Array.from(inp.shape)},
    output: {dtype: out.dtype, shape: Array.from(out.shape)},
    backend: `LiteRT.js ${backend}`,
    facts: {threads: threaded ? threads : 1, fully_accelerated: backend === 'wasm' ? null : compiled.isFullyAccelerated},
    async run(typed, shape) {
      const tensor = new lrt.Tensor(typed, shape);
      try {
        const [result] = await compiled.run(tensor);
        const host = result.accelerator === 'wasm' ? result : await result.moveTo('wasm');
        const data = host.toTypedArray().slice();
        host.delete();
        return {data, shape: Array.from(host.type.layout.dimensions), dtype: host.type.dtype};
      } finally {
        tensor.delete();
      }
    },
  };
}

async function openOrt(backend, model, threads, lib) {
  const ort = await import(`${lib}/onnxruntime-web/dist/${ORT_BUNDLES[backend]}`);
  const threaded = threads > 1 && self.crossOriginIsolated === true;
  ort.env.wasm.wasmPaths = `${lib}/onnxruntime-web/dist/`;
  ort.env.wasm.numThreads = threaded ? threads : 1;
  ort.env.logLevel = 'error';
  const session = await ort.InferenceSession.create(model, {executionProviders: [backend],
                                                            graphOptimizationLevel: 'all'});
  const meta = (m) => ({dtype: m.type, shape: (m.shape || []).map((d) => (typeof d === 'number' ? d : -1))});
  const input = meta(session.inputMetadata[0]);
  const [inputName, outputName] = [session.inputNames[0], session.outputNames[0]];
  return {
    input, output: meta(session.outputMetadata[0]),
    backend: `onnxruntime-web ${backend} (${ORT_BUNDLES[backend]})`,
    facts: {threads: threaded ? threads : 1},
    async run(typed, shape) {
      const tensor = new ort.Tensor(input.dtype, typed, shape);
      const result = (await session.run({[inputName]: tensor}))[outputName];
      const data = result.location === 'cpu' ? result.data : await result.getData(true);
      return {data, shape: Array.from(result.dims), dtype: result.type};
    },
  };
}

async function openMediaPipe(backend, model, threads, lib) {
  const {FilesetResolver, ImageSegmenter} = await import(`${lib}/@mediapipe/tasks-vision/vision_bundle.mjs`);
  const fileset = await FilesetResolver.forVisionTasks(`${lib}/@mediapipe/tasks-vision/wasm`);
  const delegate = backend === 'gpu' ? 'GPU' : 'CPU';
  const segmenter = await ImageSegmenter.createFromOptions(fileset, {
    baseOptions: {modelAssetPath: model, delegate},
    canvas: delegate === 'GPU' ? new OffscreenCanvas(1, 1) : undefined,
    runningMode: 'IMAGE', outputCategoryMask: true, outputConfidenceMasks: false});
  return {
    // MediaPipe takes an image (camera bytes) and gives its category mask (its own argmax of the scores)
    input: {dtype: 'uint8', shape: [1, -1, -1, 3]},
    output: {dtype: 'uint8', shape: [1, -1, -1]},
    backend: `MediaPipe ImageSegmenter ${delegate} delegate`,
    facts: {threads: 1, labels: segmenter.getLabels ? segmenter.getLabels() : null},
    async run(typed, shape) {
      const [, height, width] = shape;
      const rgba = new Uint8ClampedArray(height * width * 4);
      for (let i = 0, j = 0; i < height * width; i++, j += 3) {
        rgba[4 * i] = typed[j]; rgba[4 * i + 1] = typed[j + 1]; rgba[4 * i + 2] = typed[j + 2]; rgba[4 * i + 3] = 255;
      }
      const result = segmenter.segment(new ImageData(rgba, width, height));
      try {
        const mask = result.categoryMask;
        return {data: mask.getAsUint8Array().slice(), shape: [1, mask.height, mask.width], dtype: 'uint8'};
      } finally {
        result.close();
      }
    },
  };
}

// What the page's GPU is: the WebGPU adapter and the WebGL renderer (SwiftShader is a software rasterizer).
export async function gpuInfo() {
  const info = {webgpu: null, webgl: null};
  try {
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    if (adapter) {
      const a = adapter.info || {};
      info.webgpu = {vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description,
                     fallback: a.isFallbackAdapter === true};
    }
  } catch (err) {
    info.webgpu_error = String(err.message || err);
  }
  try {
    const gl = new OffscreenCanvas(1, 1).getContext('webgl2');
    const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');
    info.webgl = gl ? gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER) : null;
  } catch (err) {
    info.webgl = null;
  }
  return info;
}

export const TYPED = {float32: Float32Array, uint8: Uint8Array, int8: Int8Array, int16: Int16Array,
                      int32: Int32Array, int64: BigInt64Array, float16: Uint16Array};

// Split n frames into calls of the model's batch (a dynamic batch takes them all at once); the last call is padded
// with copies of the last frame (its extra outputs are dropped by the caller, who knows n).
export function calls(typed, shape, modelBatch) {
  const [n, ...frame] = shape;
  const step = modelBatch > 0 ? modelBatch : n;
  const size = frame.reduce((a, b) => a * b, 1);
  const out = [];
  for (let i = 0; i < n; i += step) {
    let chunk = typed.subarray(i * size, Math.min(i + step, n) * size);
    if (chunk.length < step * size) {
      const padded = new typed.constructor(step * size);
      padded.set(chunk);
      for (let j = chunk.length; j < padded.length; j += size) padded.set(typed.subarray((n - 1) * size, n * size), j);
      chunk = padded;
    }
    out.push([chunk, [step, ...frame]]);
  }
  return out;
}
