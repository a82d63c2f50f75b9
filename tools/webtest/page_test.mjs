#!/usr/bin/env node
// Drives the page served by `sumi serve` in Debian's headless Chromium (via playwright-core):
// upload an image, set denoising strength, sampler, steps and size, generate, watch the
// progress bar, check the result image and its infotext, feed the result back through the
// "reuse settings" PNG drop, and keep a full-page screenshot.
//
//   node tools/webtest/page_test.mjs --url http://127.0.0.1:7860/ --image astronaut.png --out shot.png
//
// Options: --sampler NAME (default "Euler a"), --steps N (4), --width N (64), --timeout SECONDS
// (180, for the whole run), --chromium PATH (/usr/bin/chromium), --no-error-check; --features
// adds the checks of feature_checks.mjs (inpaint, touch, LoRA card --lora NAME [--lora-preview],
// hires, Extras, history, 中文) with screenshots into --artifacts DIR.
// Every request is routed through the test: one to anything but the page's origin fails it.
// Exits 0 when every check passes; otherwise prints "page_test: FAIL: ..." and exits 1.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { decodePng } from "./png.mjs";
import * as features from "./feature_checks.mjs";

function parseArgs(argv) {
  const opts = {
    url: null, image: null, out: null, sampler: "Euler a", steps: 4, width: 64, progressSteps: 30,
    timeout: 180, chromium: "/usr/bin/chromium", errorCheck: true, features: false, lora: null, loraPreview: false,
    artifacts: null,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--url": opts.url = next(); break;
      case "--image": opts.image = next(); break;
      case "--out": opts.out = next(); break;
      case "--sampler": opts.sampler = next(); break;
      case "--steps": opts.steps = Number(next()); break;
      case "--width": opts.width = Number(next()); break;
      case "--progress-steps": opts.progressSteps = Number(next()); break;
      case "--timeout": opts.timeout = Number(next()); break;
      case "--chromium": opts.chromium = next(); break;
      case "--no-error-check": opts.errorCheck = false; break;
      case "--features": opts.features = true; break;
      case "--lora": opts.lora = next(); break;
      case "--lora-preview": opts.loraPreview = true; break;
      case "--artifacts": opts.artifacts = next(); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  for (const k of ["url", "image", "out"]) if (!opts[k]) throw new Error(`--${k} is required`);
  return opts;
}

const { Failure, check } = features;
const log = (msg) => console.log(`page_test: ${msg}`);

// Width and height of a PNG from its IHDR chunk, or null for anything else.
function pngSize(file) {
  const b = fs.readFileSync(file);
  if (b.length < 24 || b.readUInt32BE(0) !== 0x89504e47 || b.toString("latin1", 12, 16) !== "IHDR") return null;
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}
const round8 = (v) => Math.min(2048, Math.max(64, Math.round(v / 8) * 8));

// Records every change of the progress bar inside the page (into window.__progressLog), so that
// a fast job is not missed between two polls of the test.
async function recordProgress(page) {
  await page.evaluate(() => {
    const p = document.getElementById("progress");
    const wrap = document.getElementById("preview-wrap");
    window.__progressLog = [];
    const note = () => window.__progressLog.push({
      progress: p.getAttribute("data-progress"), state: p.dataset.state, visible: !p.hidden && p.offsetWidth > 0,
      preview: !wrap.hidden,
    });
    if (window.__progressObservers) window.__progressObservers.forEach((o) => o.disconnect());
    window.__progressObservers = [new MutationObserver(note), new MutationObserver(note)];
    window.__progressObservers[0].observe(p, { attributes: true });
    window.__progressObservers[1].observe(wrap, { attributes: true });
  });
}

// The distinct progress values of a log while running, and whether any lay strictly inside (0, 1).
function movesOf(plog) {
  const values = plog.filter((e) => e.state === "running").map((e) => Number(e.progress));
  return {
    values: [...new Set(values.map((v) => v.toFixed(2)))],
    moved: values.some((v) => v > 0 && v < 1),
    preview: plog.some((e) => e.preview),
  };
}

// Waits until the generation is over and `n` result images have loaded; returns the results.
async function waitForResults(page, n, deadline) {
  for (;;) {
    const s = await page.evaluate(() => ({
      running: document.body.dataset.running === "true",
      error: document.getElementById("error").hidden ? null : document.querySelector("#error .msg").textContent,
      loaded: [...document.querySelectorAll("#results .result img")].filter((i) => i.complete && i.naturalWidth > 0).length,
    }));
    if (s.error) throw new Failure(`the page shows an error while generating: ${s.error}`);
    if (!s.running && s.loaded >= n) break;
    if (Date.now() > deadline) throw new Failure(`no ${n} result image(s) in time (running ${s.running}, ${s.loaded} loaded)`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const results = await resultsOf(page);
  check(results.length === n, `expected ${n} result(s), got ${results.length}`);
  return results;
}

function resultsOf(page) {
  return page.$$eval("#results .result", (rs) => rs.map((r) => {
    const img = r.querySelector("img");
    const a = r.querySelector("a[download]");
    return {
      w: img.naturalWidth, h: img.naturalHeight, src: img.src, info: r.querySelector(".infotext").textContent,
      href: a ? a.href : null, download: a ? a.getAttribute("download") : null,
    };
  }));
}

async function run(opts, ctx, page, tmp) {
  const t0 = Date.now();
  const origin = new URL(opts.url).origin;
  const pageErrors = [];
  const foreign = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith("data:") && !u.startsWith("blob:") && new URL(u).origin !== origin) foreign.push(u);
  });
  // nothing may leave the page's own origin on 127.0.0.1: every request passes through here
  let routed = 0;
  await ctx.route("**/*", (route) => {
    const u = new URL(route.request().url());
    routed++;
    if (u.protocol === "data:" || u.protocol === "blob:" || (u.origin === origin && u.hostname === "127.0.0.1")) return route.continue();
    foreign.push(u.href);
    return route.abort("blockedbyclient");
  });

  log(`opening ${opts.url}`);
  const resp = await page.goto(opts.url, { waitUntil: "load" });
  check(resp && resp.ok(), `GET ${opts.url} answered ${resp ? resp.status() : "nothing"}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 20000 });
  const samplers = await page.$$eval("#sampler option", (os) => os.map((o) => o.value));
  const schedulers = await page.$$eval("#scheduler option", (os) => os.map((o) => o.value));
  check(samplers.length > 0, "the sampler list is empty");
  check(schedulers.length > 0, "the scheduler list is empty");
  check(samplers.includes(opts.sampler), `sampler "${opts.sampler}" is not in the list: ${samplers.join(", ")}`);
  check(await page.isHidden("#error"), `the page shows an error after loading: ${await page.textContent("#error")}`);
  log(`loaded: ${samplers.length} samplers, ${schedulers.length} schedulers`);

  // img2img with the image
  await page.click("#tab-img2img");
  check(await page.getAttribute("#tab-img2img", "aria-selected") === "true", "img2img tab not selected");
  await page.setInputFiles("#init-image input[type=file]", opts.image);
  await page.waitForSelector("#init-image[data-loaded=true]", { timeout: 10000 });
  const src = pngSize(opts.image);
  const sizeAfterDrop = { w: Number(await page.inputValue("#width")), h: Number(await page.inputValue("#height")) };
  if (src) {
    const r = src.width / src.height;
    check(
      sizeAfterDrop.h === round8(sizeAfterDrop.w / r) || sizeAfterDrop.w === round8(sizeAfterDrop.h * r),
      `size ${sizeAfterDrop.w}x${sizeAfterDrop.h} does not follow the image's ${src.width}x${src.height}`,
    );
  }
  check(sizeAfterDrop.w % 8 === 0 && sizeAfterDrop.h % 8 === 0, `size ${sizeAfterDrop.w}x${sizeAfterDrop.h} is not a multiple of 8`);

  const prompt = "an astronaut, (watercolor:1.1)";
  const negative = "blurry, lowres";
  await page.fill("#prompt", prompt);
  await page.fill("#negative-prompt", negative);
  await page.fill("#seed", "1234");
  await page.selectOption("#sampler", opts.sampler);

  // a bad request must come back as a readable error, not silence
  if (opts.errorCheck) {
    await page.fill("#steps", "100000");
    await page.click("#generate");
    try {
      await page.waitForSelector("#error:not([hidden])", { timeout: 30000 });
    } catch {
      await page.click("#interrupt").catch(() => {});
      throw new Failure("steps=100000 showed no error within 30 s (the server should reject it with a 4xx)");
    }
    const msg = (await page.textContent("#error .msg")).trim();
    check(/\b4\d\d\b/.test(msg), `the error shown for steps=100000 has no 4xx status: ${msg}`);
    check(await page.isVisible(".field-error[data-for=steps]"), `the error naming steps is not shown next to the field: ${msg}`);
    check(await page.$eval("#steps", (e) => e.classList.contains("invalid")), "the steps field is not marked invalid");
    log(`the error is shown next to the steps field: ${await page.textContent(".field-error[data-for=steps]")}`);
    await page.waitForSelector("#generate:not([disabled])", { timeout: 10000 });
    log(`bad request shown as: ${msg.replace(/\n/g, " | ")}`);
    await page.click("#error-close");
    check(await page.isHidden("#error"), "the error did not close");
    check(await page.$$eval(".field-error[data-for]", (l) => l.length) === 0, "the field error stayed after closing the error");
  }

  // txt2img with a batch of two and more steps (long enough to watch the bar move): both
  // images come back with consecutive seeds
  await page.click("#tab-txt2img");
  check(await page.isHidden("#init-image"), "the input image stays visible on the txt2img tab");
  check(await page.isHidden("#strength"), "the denoising strength stays visible on the txt2img tab");
  await page.fill("#width", String(opts.width));
  await page.press("#width", "Tab");
  await page.fill("#height", String(opts.width));
  await page.press("#height", "Tab");
  await page.fill("#steps", String(opts.progressSteps));
  await page.fill("#batch-size", "2");
  await recordProgress(page);
  const tRun = Date.now();
  await page.click("#generate");
  const batch = await waitForResults(page, 2, t0 + opts.timeout * 1000);
  const txtMoves = movesOf(await page.evaluate(() => window.__progressLog));
  const txtSecs = (Date.now() - tRun) / 1000;
  log(`txt2img: 2 x ${opts.progressSteps} steps in ${txtSecs.toFixed(1)} s; progress values seen: ${txtMoves.values.join(" ")}${txtMoves.preview ? "; live preview shown" : ""}`);
  // the page polls every 500 ms: a job of 1.5 s or more must show the bar between 0 and 1
  check(txtMoves.moved || txtSecs < 1.5, `the progress bar did not move during a ${txtSecs.toFixed(1)} s job (values ${txtMoves.values.join(" ")})`);
  for (const [i, r] of batch.entries()) {
    check(r.w === opts.width && r.h === opts.width, `txt2img result ${i + 1} is ${r.w}x${r.h}, expected ${opts.width}x${opts.width}`);
    check(r.info.includes(`Seed: ${1234 + i},`), `txt2img result ${i + 1} lacks "Seed: ${1234 + i}": ${r.info}`);
    check(r.info.includes(`Steps: ${opts.progressSteps},`), `txt2img result ${i + 1} lacks "Steps: ${opts.progressSteps}": ${r.info}`);
  }
  log(`txt2img batch of 2: seeds 1234 and 1235, ${opts.width}x${opts.width}`);
  await page.fill("#batch-size", "1");
  await page.click("#tab-img2img");

  await page.fill("#steps", String(opts.steps));
  await page.fill("#strength", "0.6");
  check(await page.inputValue("#strength-value") === "0.60", `strength number shows ${await page.inputValue("#strength-value")}, not 0.60`);
  await page.fill("#width", String(opts.width));
  await page.press("#width", "Tab");
  const width = Number(await page.inputValue("#width"));
  const height = Number(await page.inputValue("#height"));
  check(width === opts.width, `width is ${width} after typing ${opts.width}`);
  if (src) {
    check(height === round8(width * src.height / src.width), `height ${height} does not keep the aspect of ${src.width}x${src.height} at width ${width}`);
  }
  log(`generating ${width}x${height}, ${opts.steps} steps, ${opts.sampler}, strength 0.6`);

  await recordProgress(page);
  const tGen = Date.now();
  await page.click("#generate");
  const seenByPolling = [];
  const deadline = t0 + opts.timeout * 1000;
  for (;;) {
    const s = await page.evaluate(() => {
      const p = document.getElementById("progress");
      const img = document.querySelector("#results .result img");
      return {
        progress: p.getAttribute("data-progress"), state: p.dataset.state, visible: !p.hidden && p.offsetWidth > 0,
        done: !!(img && img.complete && img.naturalWidth > 0),
        running: document.body.dataset.running === "true",
        error: document.getElementById("error").hidden ? null : document.querySelector("#error .msg").textContent,
      };
    });
    seenByPolling.push(s);
    if (s.error) throw new Failure(`the page shows an error while generating: ${s.error}`);
    if (s.done && !s.running) break;
    if (Date.now() > deadline) throw new Failure(`no result image within ${opts.timeout} s (last progress ${s.progress}, state ${s.state})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const genSecs = ((Date.now() - tGen) / 1000).toFixed(1);

  const plog = await page.evaluate(() => window.__progressLog);
  const running = plog.concat(seenByPolling).filter((e) => e.state === "running");
  check(running.length > 0, "the progress bar never entered the running state");
  check(running.some((e) => e.visible && e.progress !== null), "the progress bar was not visible with data-progress during the run");
  const values = running.map((e) => Number(e.progress));
  const moved = values.some((v) => v > 0 && v < 1);
  const final = await page.evaluate(() => {
    const p = document.getElementById("progress");
    return { progress: p.getAttribute("data-progress"), state: p.dataset.state };
  });
  check(final.state === "done" && Number(final.progress) === 1, `progress ended as ${JSON.stringify(final)}, not done at 1`);
  log(`generated in ${genSecs} s; progress ${moved ? "seen moving" : "seen (job too fast to see it move)"}: ${[...new Set(values.map((v) => v.toFixed(2)))].join(" ")}${plog.some((e) => e.preview) ? "; live preview shown" : ""}`);

  // the result
  const results = await resultsOf(page);
  check(results.length === 1, `expected 1 result, got ${results.length}`);
  const res = results[0];
  for (const needle of ["Denoising strength: 0.6", `Sampler: ${opts.sampler}`, `Steps: ${opts.steps}`, `Size: ${width}x${height}`, "Seed: 1234", "Negative prompt: blurry, lowres"]) {
    check(res.info.includes(needle), `the infotext lacks "${needle}": ${res.info}`);
  }
  check(res.info.startsWith(prompt), `the infotext does not start with the prompt: ${res.info}`);
  check(res.w === width && res.h === height, `the result image is ${res.w}x${res.h}, expected ${width}x${height}`);
  check(res.href && res.download && res.download.endsWith(".png"), "the result has no download link");
  log(`result ${res.w}x${res.h}; infotext: ${res.info.replace(/\n/g, " | ")}`);

  // seed buttons
  await page.click("#seed-random");
  check(await page.inputValue("#seed") === "-1", "the random-seed button did not set the seed to -1");
  await page.click("#seed-reuse");
  check(await page.inputValue("#seed") === "1234", `♻ set the seed to ${await page.inputValue("#seed")}, not 1234`);

  // "drop a PNG to reuse its settings" with the result itself
  const b64 = await page.evaluate(async (href) => {
    const buf = new Uint8Array(await (await fetch(href)).arrayBuffer());
    let s = "";
    for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
    return btoa(s);
  }, res.href);
  const resultPng = path.join(tmp, "result.png");
  fs.writeFileSync(resultPng, Buffer.from(b64, "base64"));
  await page.fill("#prompt", "");
  await page.fill("#negative-prompt", "");
  await page.fill("#seed", "-1");
  await page.fill("#steps", "20");
  await page.fill("#strength", "0.3");
  await page.selectOption("#sampler", samplers.find((s) => s !== opts.sampler) || opts.sampler);
  await page.setInputFiles("#pnginfo-file", resultPng);
  try {
    await page.waitForFunction(() => /Filled/.test(document.getElementById("pnginfo-status").textContent) ||
      !document.getElementById("error").hidden, null, { timeout: 20000 });
  } catch {
    throw new Failure("png-info: the settings were not filled within 20 s");
  }
  check(await page.isHidden("#error"), `png-info shows an error: ${await page.textContent("#error")}`);
  const filled = {
    prompt: await page.inputValue("#prompt"), negative: await page.inputValue("#negative-prompt"),
    seed: await page.inputValue("#seed"), steps: await page.inputValue("#steps"),
    sampler: await page.inputValue("#sampler"), strength: await page.inputValue("#strength-value"),
    width: await page.inputValue("#width"), height: await page.inputValue("#height"),
  };
  const want = { prompt, negative, seed: "1234", steps: String(opts.steps), sampler: opts.sampler, strength: "0.60", width: String(width), height: String(height) };
  for (const [k, v] of Object.entries(want)) check(filled[k] === v, `png-info filled ${k} = ${JSON.stringify(filled[k])}, expected ${JSON.stringify(v)}`);
  log(`png-info refilled: ${await page.textContent("#pnginfo-status")}`);

  check(pageErrors.length === 0, `JavaScript errors on the page: ${pageErrors.join("; ")}`);
  check(foreign.length === 0, `the page requested other origins: ${foreign.join(", ")}`);

  // keyboard: the tabs answer the arrow keys
  await page.focus("#tab-img2img");
  await page.keyboard.press("ArrowLeft");
  check(await page.getAttribute("#tab-txt2img", "aria-selected") === "true", "ArrowLeft on the tabs did not select txt2img");
  check(await page.isHidden("#init-image"), "the input image stays visible on the txt2img tab");
  await page.keyboard.press("ArrowRight");
  check(await page.getAttribute("#tab-img2img", "aria-selected") === "true", "ArrowRight did not go back to img2img");

  if (opts.features) {
    const photoFile = path.join(tmp, "photo64.png");
    fs.writeFileSync(photoFile, features.smallPhoto(opts.image, 64));
    const photo = decodePng(fs.readFileSync(photoFile));
    await features.checkInpaint(page, ctx, opts, photoFile, photo);
    if (opts.lora) await features.checkLora(page, opts);
    await features.checkKeys(page, opts);
    await features.checkHiresAndExtras(page, opts, photoFile);
    // txt2img x2, img2img, inpaint, inpaint sketch, LoRA, interrupted, hires, Extras
    // the screenshots show the panels as used (results, the last picture in each), in both
    // languages, switched while they show them
    await features.checkLanguages(page, opts.artifacts || path.dirname(path.resolve(opts.out)));
    await features.checkHistory(page, opts.lora ? 9 : 8);
    check(pageErrors.length === 0, `JavaScript errors on the page: ${pageErrors.join("; ")}`);
    check(foreign.length === 0, `the page requested other origins: ${foreign.join(", ")}`);
    log(`${routed} requests, all to ${origin}`);
    await page.click("#tab-img2img");
  }

  // restore what the run used, so the screenshot shows it
  await page.fill("#steps", String(opts.steps));
  await page.fill("#strength", "0.6");
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
  await page.screenshot({ path: opts.out, fullPage: true });
  log(`screenshot: ${opts.out}`);
  log(`PASS in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv);
  } catch (e) {
    console.error(`page_test: ${e.message}`);
    console.error("usage: node page_test.mjs --url URL --image FILE --out SCREENSHOT.png [--sampler NAME] [--steps N] [--width N] [--timeout S]");
    return 2;
  }
  for (const [what, p] of [["image", opts.image], ["chromium", opts.chromium]]) {
    if (!fs.existsSync(p)) {
      console.error(`page_test: FAIL: ${what} ${p} does not exist`);
      return 1;
    }
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sumi-webtest-"));
  let ctx = null;
  let page = null;
  const guard = setTimeout(() => {
    console.error(`page_test: FAIL: gave up after ${opts.timeout + 60} s`);
    process.exit(1);
  }, (opts.timeout + 60) * 1000);
  try {
    ctx = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
      executablePath: opts.chromium,
      headless: true,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
      viewport: { width: 1280, height: 900 },
      locale: "en-US",
      timeout: 60000,
    });
    ctx.setDefaultTimeout(20000);
    page = ctx.pages()[0] || await ctx.newPage();
    await run(opts, ctx, page, tmp);
    return 0;
  } catch (e) {
    console.error(`page_test: FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
    if (page) {
      const failShot = opts.out.replace(/(\.png)?$/, ".failed.png");
      try {
        fs.mkdirSync(path.dirname(path.resolve(failShot)), { recursive: true });
        await page.screenshot({ path: failShot, fullPage: true });
        console.error(`page_test: screenshot of the failure: ${failShot}`);
      } catch { /* nothing more to show */ }
    }
    return 1;
  } finally {
    clearTimeout(guard);
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

process.exitCode = await main();
