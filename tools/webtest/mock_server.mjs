// A stand-in for `sumi serve` that answers the handful of /sdapi/v1 endpoints the web page
// uses with canned data, so the page and page_test.mjs can be tried in seconds without a
// model:  node tools/webtest/mock_server.mjs --port 7861
// then:   node tools/webtest/page_test.mjs --url http://127.0.0.1:7861/ --image x.png --out shot.png
// Images are solid-colour PNGs of the requested size carrying A1111-style infotext.
import http from "node:http";
import fs from "node:fs";
import zlib from "node:zlib";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const page = path.join(here, "../../crates/sumi-server/assets/index.html");
const argPort = process.argv.indexOf("--port");
const port = argPort > 0 ? Number(process.argv[argPort + 1]) : 7861;
const stepMs = Number(process.env.MOCK_STEP_MS || 250);

const CRC = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32(buf) {
  let c = -1;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
function png(width, height, rgb, text) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = y * (width * 3 + 1) + 1 + x * 3;
      raw[o] = rgb[0]; raw[o + 1] = (rgb[1] + x * 2) & 255; raw[o + 2] = (rgb[2] + y * 2) & 255;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("tEXt", Buffer.from("parameters\0" + text, "latin1")),
    chunk("IDAT", zlib.deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
function pngText(buf) {
  let o = 8;
  while (o + 8 <= buf.length) {
    const len = buf.readUInt32BE(o);
    const type = buf.toString("latin1", o + 4, o + 8);
    if (type === "tEXt") {
      const data = buf.subarray(o + 8, o + 8 + len);
      const z = data.indexOf(0);
      if (data.toString("latin1", 0, z) === "parameters") return data.toString("latin1", z + 1);
    }
    o += 12 + len;
  }
  return "";
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

async function generate(mode, req, res) {
  let p;
  try { p = JSON.parse(await body(req)); } catch (e) { return send(res, 422, { error: "JSONDecodeError", detail: e.message }); }
  if (job) return send(res, 429, { error: "QueueFull", detail: "the queue is full" }, { "Retry-After": "2" });
  const steps = p.steps ?? 50;
  if (steps > 1000) return send(res, 422, { error: "InvalidRequest", detail: "steps must be at most 1000" });
  if (mode === "img2img" && !(p.init_images && p.init_images.length)) return send(res, 422, { error: "InvalidRequest", detail: "init_images is required" });
  const w = p.width ?? 512, h = p.height ?? 512, n = (p.n_iter ?? 1) * (p.batch_size ?? 1);
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
    t += ", Version: mock";
    images.push(png(w, h, [200, (i * 60) & 255, 90], t).toString("base64"));
    infotexts.push(t);
    seeds.push(seed + i);
  }
  const info = { prompt: p.prompt ?? "", seed, all_seeds: seeds, infotexts, width: w, height: h, steps };
  send(res, 200, { images, parameters: p, info: JSON.stringify(info) });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const r = `${req.method} ${url.pathname}`;
  if (r === "GET /") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    return res.end(fs.readFileSync(page));
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
