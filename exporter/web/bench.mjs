// The page of a unet-bench web row (driven by driver.mjs): open one model, run frames, time calls in the page.
import {calls, gpuInfo, openRunner, TYPED} from './runners.mjs';

let runner = null;

async function frames(file, shape) {
  const bytes = await (await fetch(`/work/${file}`)).arrayBuffer();
  return calls(new TYPED[runner.input.dtype](bytes), shape, runner.input.shape[0]);
}

async function runAll(batches) {
  const outs = [];
  for (const [typed, shape] of batches) outs.push(await runner.run(typed, shape));
  return outs;
}

window.unet = {
  async open(o) {
    runner = await openRunner(o.runtime, o.backend, o.model, o.threads, '/node_modules');
    return {input: runner.input, output: runner.output, backend: runner.backend, facts: runner.facts,
            gpu: await gpuInfo(), cross_origin_isolated: self.crossOriginIsolated === true};
  },
  // Outputs of every frame, concatenated and posted back as raw bytes (work/out.bin).
  async run(file, shape) {
    const outs = await runAll(await frames(file, shape));
    const [first] = outs;
    const perFrame = first.data.byteLength / first.shape[0];
    const joined = new Uint8Array(perFrame * shape[0]);  // a padded last call's extra frames left out
    let at = 0;
    for (const o of outs) {
      const bytes = new Uint8Array(o.data.buffer, o.data.byteOffset, o.data.byteLength);
      joined.set(bytes.subarray(0, Math.min(bytes.length, joined.length - at)), at);
      at += bytes.length;
    }
    await fetch('/work/out.bin', {method: 'POST', body: joined});
    return {file: 'out.bin', dtype: first.dtype, shape: [shape[0], ...first.shape.slice(1)]};
  },
  // The bench's methodology in the page: untimed warm-up calls, then both floors (runs and seconds); raw ms.
  async time(j) {
    const batches = await frames(j.frames, j.shape);
    for (let i = 0; i < j.warmup; i++) await runAll(batches);
    const samples = [];
    const started = performance.now();
    while (samples.length < j.maxRuns && (samples.length < j.minRuns || performance.now() - started < 1000 * j.minSeconds)) {
      const t0 = performance.now();
      await runAll(batches);
      samples.push(performance.now() - t0);
    }
    return samples;
  },
};
