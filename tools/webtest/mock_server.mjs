// A stand-in for `sumi serve` that answers the handful of /sdapi/v1 endpoints the web page
// uses with canned data, so the page and page_test.mjs can be tried in seconds without a
// model:  node tools/webtest/mock_server.mjs --port 7861
// then:   node tools/webtest/page_test.mjs --url http://127.0.0.1:7861/ --image x.png --out shot.png
// Images are solid-colour PNGs of the requested size carrying A1111-style infotext.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { decodePng, encodePng, pngText } from "./png.mjs";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const assets = path.join(here, "../../crates/sumi-server/assets");
const TYPES = { html: "text/html; charset=utf-8", js: "text/javascript; charset=utf-8", css: "text/css; charset=utf-8" };
const argPort = process.argv.indexOf("--port");
const port = argPort > 0 ? Number(process.argv[argPort + 1]) : 7861;
const stepMs = Number(process.env.MOCK_STEP_MS || 250);

function png(width, height, rgb, text) {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      px[o] = rgb[0]; px[o + 1] = (rgb[1] + x * 2) & 255; px[o + 2] = (rgb[2] + y * 2) & 255;
    }
  }
  return encodePng(width, height, px, text);
}

const idle = { progress: 0, eta_relative: 0, state: { job_count: 0, sampling_step: 0, sampling_steps: 0, interrupted: false, skipped: false }, current_image: null, textinfo: null };
let job = null; // {start, steps, interrupted}

function send(res, status, obj, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(obj));
}
function body(req) {
  return new Promise((resolve) => {
    const parts = [];
    req.on("data", (d) => parts.push(d));
    req.on("end", () => resolve(Buffer.concat(parts).toString()));
  });
}

// The init picture with the masked pixels painted over, as an inpaint leaves what is outside.
function inpainted(p, text) {
  const init = decodePng(Buffer.from(p.init_images[0], "base64"));
  const mask = decodePng(Buffer.from(p.mask, "base64"));
  const rgb = Buffer.alloc(init.width * init.height * 3);
  for (let i = 0; i < init.width * init.height; i++) {
    const masked = mask.width === init.width && mask.data[i * 4] >= 128;
    for (let c = 0; c < 3; c++) rgb[i * 3 + c] = masked ? 255 - init.data[i * 4 + c] : init.data[i * 4 + c];
  }
  return encodePng(init.width, init.height, rgb, text);
}

async function generate(mode, req, res) {
  let p;
  try { p = JSON.parse(await body(req)); } catch (e) { return send(res, 422, { error: "JSONDecodeError", detail: e.message }); }
  if (job) return send(res, 429, { error: "QueueFull", detail: "the queue is full" }, { "Retry-After": "2" });
  const steps = p.steps ?? 50;
  // FastAPI's validation answer, as A1111 gives it
  if (steps > 1000) return send(res, 422, { detail: [{ loc: ["body", "steps"], msg: "ensure this value is less than or equal to 1000", type: "value_error" }] });
  if (mode === "img2img" && !(p.init_images && p.init_images.length)) return send(res, 422, { error: "InvalidRequest", detail: "init_images is required" });
  const k = p.enable_hr ? p.hr_scale ?? 2 : 1;
  const w = (p.width ?? 512) * k, h = (p.height ?? 512) * k, n = (p.n_iter ?? 1) * (p.batch_size ?? 1);
  const seed = p.seed == null || p.seed === -1 ? 1234 : p.seed;
  job = { start: Date.now(), steps, interrupted: false };
  while (!job.interrupted && Date.now() - job.start < steps * stepMs) await new Promise((r) => setTimeout(r, 20));
  job = null;
  const images = [], infotexts = [], seeds = [];
  for (let i = 0; i < n; i++) {
    let t = p.prompt ?? "";
    if (p.negative_prompt) t += "\nNegative prompt: " + p.negative_prompt;
    t += `\nSteps: ${steps}, Sampler: ${p.sampler_name ?? "Euler"}, Schedule type: ${p.scheduler === "karras" ? "Karras" : "Automatic"}, CFG scale: ${p.cfg_scale ?? 7}, Seed: ${seed + i}, Size: ${w}x${h}, Model hash: 0123456789, Model: mock`;
    if (mode === "img2img") t += `, Denoising strength: ${p.denoising_strength ?? 0.75}`;
    const loras = [...String(p.prompt ?? "").matchAll(/<lora:([^:>]+)[^>]*>/g)].map((m) => m[1] + ": 0123456789ab");
    if (loras.length) t += `, Lora hashes: "${loras.join(", ")}"`;
    t += ", Version: mock";
    images.push((p.mask ? inpainted(p, t) : png(w, h, [200, (i * 60) & 255, 90], t)).toString("base64"));
    infotexts.push(t);
    seeds.push(seed + i);
  }
  const info = { prompt: p.prompt ?? "", seed, all_seeds: seeds, infotexts, width: w, height: h, steps };
  send(res, 200, { images, parameters: p, info: JSON.stringify(info) });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const r = `${req.method} ${url.pathname}`;
  const file = r === "GET /" ? "index.html" : r.startsWith("GET /assets/") ? url.pathname.slice(8) : null;
  if (file && /^[a-z0-9_]+\.(html|js|css)$/.test(file) && fs.existsSync(path.join(assets, file))) {
    res.writeHead(200, { "Content-Type": TYPES[file.split(".").pop()] });
    return res.end(fs.readFileSync(path.join(assets, file)));
  }
  if (r === "GET /sdapi/v1/loras") return send(res, 200, [{ name: "mock_lora", alias: "mock_lora", path: "/l/mock_lora.safetensors", metadata: {} }]);
  if (r === "GET /sdapi/v1/embeddings") return send(res, 200, { loaded: { mockemb: { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 768, vectors: 1 } }, skipped: {} });
  if (r === "GET /sdapi/v1/hypernetworks") return send(res, 200, [{ name: "mock_hn", path: "/h/mock_hn.pt" }]);
  if (r === "GET /sdapi/v1/upscalers") return send(res, 200, ["None", "Lanczos", "Nearest"].map((name) => ({ name, model_name: null, model_path: null, model_url: null, scale: 4 })));
  if (r === "GET /sdapi/v1/latent-upscale-modes") return send(res, 200, [{ name: "Latent" }, { name: "Latent (nearest)" }]);
  if (r === "POST /sdapi/v1/refresh-loras") { await body(req); return send(res, 200, null); }
  if (r === "POST /sdapi/v1/extra-single-image") {
    const p = JSON.parse(await body(req));
    const k = Number(p.upscaling_resize ?? 2);
    if (!(k > 0)) return send(res, 422, { error: "ValidationError", detail: `upscaling_resize: ${k} is not greater than 0` });
    return send(res, 200, { html_info: `Postprocess upscale by: ${k}, Postprocess upscaler: ${p.upscaler_1}`, image: png(64 * k, 64 * k, [10, 200, 30], "").toString("base64") });
  }
  if (r === "GET /health") return send(res, 200, { status: "ok" });
  if (r === "GET /sdapi/v1/samplers") return send(res, 200, ["DPM++ 2M", "Euler a", "Euler", "DDIM"].map((name) => ({ name, aliases: [], options: {} })));
  if (r === "GET /sdapi/v1/schedulers") return send(res, 200, [["automatic", "Automatic"], ["karras", "Karras"], ["exponential", "Exponential"]].map(([name, label]) => ({ name, label, aliases: null })));
  if (r === "GET /sdapi/v1/sd-models") return send(res, 200, [{ title: "mock.safetensors [0123456789]", model_name: "mock", hash: "0123456789", sha256: "0123456789abcdef", filename: "/mock.safetensors" }]);
  if (r === "GET /sdapi/v1/options") return send(res, 200, { sd_model_checkpoint: "mock.safetensors [0123456789]" });
  if (r === "POST /sdapi/v1/options") { await body(req); return send(res, 200, null); }
  if (r === "GET /sdapi/v1/progress") {
    if (!job) return send(res, 200, idle);
    const done = Math.min(job.steps, Math.floor((Date.now() - job.start) / stepMs));
    const progress = done / job.steps;
    const eta = ((job.steps - done) * stepMs) / 1000;
    return send(res, 200, {
      progress, eta_relative: eta,
      state: { job_count: 1, job_no: 0, sampling_step: done, sampling_steps: job.steps, interrupted: job.interrupted, skipped: false },
      current_image: done > 0 ? png(32, 32, [40, done * 40, 160], "").toString("base64") : null,
      textinfo: null,
    });
  }
  if (r === "POST /sdapi/v1/interrupt" || r === "POST /sdapi/v1/skip") {
    await body(req);
    if (job) job.interrupted = true;
    return send(res, 200, {});
  }
  if (r === "POST /sdapi/v1/txt2img") return generate("txt2img", req, res);
  if (r === "POST /sdapi/v1/img2img") return generate("img2img", req, res);
  if (r === "POST /sdapi/v1/png-info") {
    let p;
    try { p = JSON.parse(await body(req)); } catch (e) { return send(res, 422, { error: "JSONDecodeError", detail: e.message }); }
    const b64 = String(p.image || "").replace(/^data:[^,]*,/, "");
    const info = pngText(Buffer.from(b64, "base64"));
    return send(res, 200, { info, items: info ? { parameters: info } : {}, parameters: {} });
  }
  send(res, 404, { error: "NotFound", detail: `${r} is not mocked` });
});
server.listen(port, "127.0.0.1", () => console.log(`mock server on http://127.0.0.1:${port}/`));
