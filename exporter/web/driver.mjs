// The browser side of a unet-bench web row: a headless Chromium (the one named, never a downloaded one) driven
// by puppeteer-core, a page served from loopback that runs one model on one web runtime, and a line protocol
// with the Python worker (exporter/runtimes/web.py).
//
//   node driver.mjs            stdin: one JSON command a line; stdout: one JSON reply a line, prefixed REPLY
//
// Commands: {"cmd": "open", browser, runtime, backend, model, threads, work}   load the model in the page
//           {"cmd": "run", frames, shape}        run the frames (the input's bytes in work/FRAMES), outputs to work/
//           {"cmd": "time", frames, shape, warmup, minRuns, minSeconds, maxRuns}   time calls in the page
//           {"cmd": "visit", browser, site, path}  open a web app's page (a folder), wait for its first answer
//           {"cmd": "shot", path}                a screenshot of the page
//           {"cmd": "close"}
// Every reply is {"ok": true, ...} or {"ok": false, "error": "one line"}; what the page printed as an error is
// kept and added to a failure's line.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import {fileURLToPath} from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULES = process.env.UNET_WEB_MODULES || path.join(HERE, 'node_modules');
const PREFIX = 'REPLY ';
// Chromium without a network: no background traffic, no component updates. WebGPU and WebGL use the machine's GPU;
// where it has none, Chromium falls back to SwiftShader (a software rasterizer, allowed by the unsafe-swiftshader
// flag): a correctness check, not a GPU's speed, and the row says so. More flags: $UNET_BROWSER_FLAGS.
export const CHROMIUM_FLAGS = [
  '--headless=new', '--no-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--disable-dev-shm-usage',
  '--disable-default-apps', '--disable-extensions', '--mute-audio', '--enable-unsafe-webgpu',
  '--enable-features=Vulkan', '--enable-unsafe-swiftshader',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
];
const TYPES = {
  '.html': 'text/html', '.mjs': 'text/javascript', '.js': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.txt': 'text/plain',
};

// Static files: the page and its scripts from here, the packages from node_modules, the model and the work
// folder; POST writes into the work folder. Cross-origin isolated (COOP/COEP): WASM threads need it, and it
// makes performance.now() fine-grained.
export function serve(roots) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const [, top, ...rest] = decodeURIComponent(url.pathname).split('/');
    const root = roots[top];
    const file = root && path.resolve(root, rest.join('/'));
    const headers = {'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
                     'Cross-Origin-Resource-Policy': 'same-origin', 'Cache-Control': 'no-store'};
    if (!file || !(file === root || file.startsWith(root + path.sep))) {
      res.writeHead(404, headers); res.end(); return;
    }
    if (req.method === 'POST' && top === 'work') {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => { fs.writeFileSync(file, Buffer.concat(chunks)); res.writeHead(204, headers); res.end(); });
      return;
    }
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404, headers); res.end(); return; }
      res.writeHead(200, {...headers, 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream'});
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

export async function launch(executablePath, extraFlags = []) {
  let puppeteer;
  try {
    puppeteer = (await import(path.join(MODULES, 'puppeteer-core', 'lib', 'esm', 'puppeteer', 'puppeteer-core.js'))).default;
  } catch (err) {
    throw new Error(`puppeteer-core is not installed in ${MODULES} (make setup-web): ${err.message}`);
  }
  const userDataDir = fs.mkdtempSync(path.join(process.env.TMPDIR || '/tmp', 'unet-chromium-'));
  const removeProfile = () => fs.rmSync(userDataDir, {recursive: true, force: true});
  process.on('exit', removeProfile);  // however this process ends (a kill -9 aside)
  const extra = (process.env.UNET_BROWSER_FLAGS || '').split(/\s+/).filter(Boolean);
  try {
    const browser = await puppeteer.launch({executablePath, headless: true, userDataDir, protocolTimeout: 600000,
                                           args: [...CHROMIUM_FLAGS, ...extra, ...extraFlags], pipe: true});
    browser.once('disconnected', removeProfile);
    return browser;
  } catch (err) {
    removeProfile();
    throw err;
  }
}

// The renderer's peak resident memory (VmHWM, Linux), in MB: where the page's WASM heap lives.
async function rendererPeakMb(browser) {
  try {
    const session = await browser.target().createCDPSession();
    const {processInfo} = await session.send('SystemInfo.getProcessInfo');
    let peak = 0;
    for (const p of processInfo.filter((p) => p.type === 'renderer')) {
      const status = fs.readFileSync(`/proc/${p.id}/status`, 'utf8');
      const kb = Number((status.match(/VmHWM:\s+(\d+)/) || [])[1] || 0);
      peak = Math.max(peak, kb / 1024);
    }
    return peak || null;
  } catch {
    return null;
  }
}

// A runtime's error as one readable line: no stack frames, no script locations.
const NOISE = /^at |^DefaultErrorReporter|^└?\s*ERROR: \[[^\]]*\]$|^INFO: |^=== Source Location/;
const LOCATION = /\s*\(?https?:\/\/[^\s)]*\)?/g;  // script locations: cut from a line, not the line

function oneLine(err, pageErrors = []) {
  const raw = String(err && err.message || err);
  const clean = (l) => l.trim().replace(LOCATION, '').trim();
  const text = raw.split('\n').map(clean).filter((l) => l && !NOISE.test(l)).join('; ') ||
    clean(raw.split('\n')[0]) || 'the page failed without a message';
  const extra = pageErrors.map(clean).filter((e) => e && !NOISE.test(e) && !text.includes(e)).slice(-2).join('; ');
  return (extra ? `${text} (page: ${extra})` : text).slice(0, 400);
}

async function main() {
  let browser, page, server;
  const pageErrors = [];
  const reply = (obj) => process.stdout.write(PREFIX + JSON.stringify(obj) + '\n');
  const lines = readline.createInterface({input: process.stdin});
  // The Python side gone (killed by the bench's timeout): close the browser rather than leave it behind.
  process.stdin.on('end', () => setTimeout(() => {
    if (browser) browser.process()?.kill('SIGKILL');
    process.exit(0);
  }, 2000));
  for await (const line of lines) {
    if (!line.trim()) continue;
    const job = JSON.parse(line);
    try {
      if (job.cmd === 'open') {
        server = await serve({app: HERE, node_modules: MODULES, work: job.work, model: path.dirname(job.model)});
        browser = await launch(job.browser, job.flags || []);
        page = await browser.newPage();
        page.on('pageerror', (e) => pageErrors.push(String(e.message || e).split('\n')[0]));
        page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text().split('\n')[0]); });
        const base = `http://127.0.0.1:${server.address().port}`;
        await page.goto(`${base}/app/bench.html`, {waitUntil: 'load'});
        await page.waitForFunction('window.unet !== undefined', {timeout: 30000});
        const opened = await page.evaluate((o) => window.unet.open(o), {
          runtime: job.runtime, backend: job.backend, threads: job.threads,
          model: `/model/${encodeURIComponent(path.basename(job.model))}`});
        reply({ok: true, ...opened, browser: await browser.version(), user_agent: await browser.userAgent()});
      } else if (job.cmd === 'visit') {  // a site unet-export webapp wrote: open it, wait for its first answer
        server = await serve({site: job.site});
        browser = await launch(job.browser, job.flags || []);
        page = await browser.newPage();
        page.on('pageerror', (e) => pageErrors.push(String(e.message || e).split('\n')[0]));
        await page.setViewport({width: job.width || 1000, height: job.height || 700});
        await page.goto(`http://127.0.0.1:${server.address().port}/site/${job.path}`, {waitUntil: 'load'});
        await page.waitForFunction("['done', 'error'].includes(document.body.dataset.state)",
                                   {timeout: 1000 * (job.timeout || 120)});
        reply({ok: true, browser: await browser.version(), ...await page.evaluate(() => ({
          state: document.body.dataset.state, last: window.unetApp.last, error: window.unetApp.error,
          model: document.getElementById('model').textContent, timing: document.getElementById('timing').textContent,
          legend: [...document.querySelectorAll('#legend li')].map((li) => li.textContent)}))});
      } else if (job.cmd === 'run') {
        reply({ok: true, ...await page.evaluate((f, s) => window.unet.run(f, s), job.frames, job.shape)});
      } else if (job.cmd === 'time') {
        const samples = await page.evaluate((j) => window.unet.time(j), job);
        reply({ok: true, samples, peak_rss_mb: await rendererPeakMb(browser)});
      } else if (job.cmd === 'shot') {
        await page.screenshot({path: job.path});
        reply({ok: true});
      } else if (job.cmd === 'close') {
        break;
      } else {
        reply({ok: false, error: `unknown command ${job.cmd}`});
      }
    } catch (err) {
      reply({ok: false, error: oneLine(err, pageErrors)});
    }
  }
  if (browser) await browser.close().catch(() => {});
  if (server) server.close();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().then(() => process.exit(0), (err) => {
    process.stdout.write(PREFIX + JSON.stringify({ok: false, error: oneLine(err)}) + '\n');
    process.exit(1);
  });
}
