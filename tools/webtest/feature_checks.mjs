// The page's issue-19 features, driven in Chromium against `sumi serve` (or the mock):
// inpaint with a mouse-drawn mask (pixels outside the blurred mask equal the source, checked
// from the returned PNG), a touch stroke, undo/invert, inpaint sketch, a LoRA card (infotext
// `Lora hashes`), prompt weights with Ctrl+Up/Down, hires fix, Extras, field errors, the history
// after a reload, the Chinese page with no English label left, and a screenshot of each panel in
// both languages.
import fs from "node:fs";
import path from "node:path";
import { decodePng, encodePng } from "./png.mjs";

export class Failure extends Error {}
export function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}
const log = (msg) => console.log(`page_test: ${msg}`);

// A size x size RGB photo made from `file` (a box-filtered centre crop), as a PNG buffer, and
// its pixels.
export function smallPhoto(file, size) {
  const src = decodePng(fs.readFileSync(file));
  const side = Math.min(src.width, src.height);
  const x0 = (src.width - side) >> 1, y0 = (src.height - side) >> 1;
  const k = side / size;
  const rgb = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const acc = [0, 0, 0];
      let n = 0;
      for (let yy = Math.floor(y * k); yy < Math.floor((y + 1) * k); yy++) {
        for (let xx = Math.floor(x * k); xx < Math.floor((x + 1) * k); xx++) {
          const o = ((y0 + yy) * src.width + x0 + xx) * 4;
          for (let c = 0; c < 3; c++) acc[c] += src.data[o + c];
          n++;
        }
      }
      for (let c = 0; c < 3; c++) rgb[(y * size + x) * 3 + c] = Math.round(acc[c] / Math.max(1, n));
    }
  }
  return encodePng(size, size, rgb);
}

async function waitDone(page, deadlineMs) {
  await page.waitForFunction(() => document.body.dataset.running !== "true" &&
    (document.querySelector("#results .result img") || !document.getElementById("error").hidden), null, { timeout: deadlineMs });
  const err = await page.evaluate(() => (document.getElementById("error").hidden ? null : document.querySelector("#error .msg").textContent));
  check(!err, `the page shows an error: ${err}`);
}

// Generates with the current form and returns {request, response} of the API call.
async function generateAndCapture(page, endpoint, timeoutMs) {
  const req = page.waitForRequest((r) => r.url().endsWith(`/sdapi/v1/${endpoint}`) && r.method() === "POST", { timeout: timeoutMs });
  const resp = page.waitForResponse((r) => r.url().endsWith(`/sdapi/v1/${endpoint}`), { timeout: timeoutMs });
  await page.click("#generate");
  const [rq, rs] = await Promise.all([req, resp]);
  check(rs.status() === 200, `${endpoint} answered ${rs.status()}: ${await rs.text()}`);
  await waitDone(page, timeoutMs);
  return { request: rq.postDataJSON(), response: await rs.json() };
}

// Image coordinates -> page coordinates on the mask canvas.
async function toPage(page, sel, pts) {
  await page.locator(sel).scrollIntoViewIfNeeded();
  const box = await page.locator(sel).boundingBox();
  const size = await page.$eval(sel, (c) => ({ w: c.width, h: c.height }));
  return pts.map(([x, y]) => [box.x + (x + 0.5) * box.width / size.w, box.y + (y + 0.5) * box.height / size.h]);
}
const maskCount = (page) => page.$eval("#mask-canvas", (c) => {
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] >= 128) n++;
  return n;
});

// Compares an inpaint answer with the source: pixels farther than the blur's reach (A1111: a
// Gaussian of kernel 2*round(2.5*blur)+1) from every mask pixel must be the source's.
function compareOutside(request, response, photo, size) {
  const mask = decodePng(Buffer.from(request.mask, "base64"));
  const out = decodePng(Buffer.from(response.images[0], "base64"));
  check(out.width === size && out.height === size, `the inpainted picture is ${out.width}x${out.height}`);
  const reach = Math.ceil(2.5 * request.mask_blur) + 1;
  const inMask = (x, y) => mask.data[(y * size + x) * 4] >= 128;
  let outside = 0, differ = 0, changedInside = 0, inside = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let near = false;
      for (let yy = Math.max(0, y - reach); yy <= Math.min(size - 1, y + reach) && !near; yy++) {
        for (let xx = Math.max(0, x - reach); xx <= Math.min(size - 1, x + reach); xx++) if (inMask(xx, yy)) { near = true; break; }
      }
      const o = (y * size + x) * 4;
      const same = [0, 1, 2].every((c) => out.data[o + c] === photo.data[o + c]);
      if (!near) { outside++; if (!same) differ++; }
      if (inMask(x, y)) { inside++; if (!same) changedInside++; }
    }
  }
  check(outside > size * size / 3, `only ${outside} pixels lie outside the blurred mask`);
  check(differ === 0, `${differ} of ${outside} pixels outside the blurred mask differ from the source`);
  check(changedInside > inside / 2, `only ${changedInside} of ${inside} masked pixels changed`);
  return { inside, outside, changedInside };
}

// Inpaint: a mouse stroke on the uploaded photo, generate, compare the returned picture with
// the source outside the blurred mask; then a touch stroke, undo and invert.
export async function checkInpaint(page, ctx, opts, photoFile, photo) {
  const size = photo.width;
  await page.click("#tab-inpaint");
  await page.setInputFiles("#inpaint-file", photoFile);
  await page.waitForSelector("#inpaint-drop[data-loaded=true]");
  await page.fill("#width", String(size));
  await page.press("#width", "Tab");
  check(await page.inputValue("#height") === String(size), `height ${await page.inputValue("#height")} after a square picture`);
  await page.fill("#steps", "3");
  await page.fill("#seed", "77");
  await page.fill("#strength", "0.9");
  // the brush size is in screen pixels: 6 picture pixels at the editor's scale
  await page.$eval("#brush-size", (e) => {
    const c = document.getElementById("mask-canvas");
    e.value = String(Math.round(6 * c.getBoundingClientRect().width / c.width));
    e.dispatchEvent(new Event("input"));
  });
  const stroke = await toPage(page, "#mask-canvas", [[12, 20], [26, 22], [40, 20]]);
  await page.mouse.move(...stroke[0]);
  await page.mouse.down();
  await page.mouse.move(...stroke[1], { steps: 8 });
  await page.mouse.move(...stroke[2], { steps: 8 });
  await page.mouse.up();
  const painted = await maskCount(page);
  check(painted > 100 && painted < 600, `the mouse stroke painted ${painted} mask pixels (expected about 180)`);
  check(await page.$eval("#mask-canvas", (c) => c.dataset.lastPointer) === "mouse", "the stroke was not a mouse pointer");
  const { request, response } = await generateAndCapture(page, "img2img", opts.timeout * 1000);
  for (const [k, v] of Object.entries({ mask_blur: 4, inpainting_fill: 1, inpaint_full_res: false, inpaint_full_res_padding: 32, inpainting_mask_invert: 0 })) {
    check(request[k] === v, `the inpaint request sent ${k} = ${JSON.stringify(request[k])}, expected ${JSON.stringify(v)}`);
  }
  check(request.override_settings && request.override_settings.inpainting_mask_weight === 1, "inpainting_mask_weight not sent");
  const { inside, outside, changedInside } = compareOutside(request, response, photo, size);
  log(`inpaint (mouse): mask ${inside} px; ${outside} px outside the blurred mask all equal the source; ${changedInside} masked px changed`);
  // "only masked": the masked box at full resolution, pasted back
  await page.check("input[name=inpaint-area][value='1']");
  const om = await generateAndCapture(page, "img2img", opts.timeout * 1000);
  check(om.request.inpaint_full_res === true, "only masked did not send inpaint_full_res: true");
  const r2 = compareOutside(om.request, om.response, photo, size);
  await page.check("input[name=inpaint-area][value='0']");
  log(`inpaint (only masked): ${r2.outside} px outside the blurred mask all equal the source; ${r2.changedInside} of ${r2.inside} masked px changed`);

  // touch: a stroke through the Chrome DevTools protocol's touch events
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Emulation.setTouchEmulationEnabled", { enabled: true, maxTouchPoints: 1 });
  const before = await maskCount(page);
  const tpts = await toPage(page, "#mask-canvas", [[10, 48], [20, 50], [30, 48], [44, 50]]);
  await cdp.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: [{ x: tpts[0][0], y: tpts[0][1] }] });
  for (const p of tpts.slice(1)) await cdp.send("Input.dispatchTouchEvent", { type: "touchMove", touchPoints: [{ x: p[0], y: p[1] }] });
  await cdp.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
  await cdp.send("Emulation.setTouchEmulationEnabled", { enabled: false });
  const afterTouch = await maskCount(page);
  check(await page.$eval("#mask-canvas", (c) => c.dataset.lastPointer) === "touch", "the touch stroke did not arrive as a touch pointer");
  check(afterTouch - before > 100, `the touch stroke painted ${afterTouch - before} mask pixels`);
  await page.click("#mask-undo");
  check(await maskCount(page) === before, "undo did not take the touch stroke back");
  await page.click("#mask-invert");
  check(await maskCount(page) === size * size - before, "invert did not invert the mask");
  await page.click("#mask-invert");
  log(`touch stroke: ${afterTouch - before} mask px; undo and invert work`);

  // an uploaded mask (white square on black) replaces the painted one; clear empties it
  const rgb = Buffer.alloc(size * size * 3);
  for (let y = 5; y < 15; y++) for (let x = 40; x < 50; x++) rgb.fill(255, (y * size + x) * 3, (y * size + x) * 3 + 3);
  const maskFile = path.join(path.dirname(photoFile), "mask.png");
  fs.writeFileSync(maskFile, encodePng(size, size, rgb));
  await page.setInputFiles("#mask-file", maskFile);
  await page.waitForFunction(() => {
    const c = document.getElementById("mask-canvas");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] >= 128) n++;
    return n === 100;
  }, null, { timeout: 5000 }).catch(() => {});
  check(await maskCount(page) === 100, `the uploaded mask gave ${await maskCount(page)} mask px, not 100`);
  await page.click("#mask-clear");
  check(await maskCount(page) === 0, "clear left mask pixels");
  log("uploaded mask: 100 px as drawn in the file; clear empties it");

  // inpaint sketch: colour painted in, the mask is where the picture changed
  await page.click("#inpaint-kind-sketch");
  const spts = await toPage(page, "#sketch-canvas", [[30, 30], [40, 34]]);
  await page.mouse.move(...spts[0]);
  await page.mouse.down();
  await page.mouse.move(...spts[1], { steps: 6 });
  await page.mouse.up();
  const sk = await generateAndCapture(page, "img2img", opts.timeout * 1000);
  const smask = decodePng(Buffer.from(sk.request.mask, "base64"));
  let sn = 0;
  for (let i = 0; i < smask.data.length; i += 4) if (smask.data[i] > 0) sn++;
  check(sn > 30 && sn < 600, `the sketch mask covers ${sn} px`);
  check(sk.request.init_images[0] !== request.init_images[0], "inpaint sketch sent the unpainted picture");
  await page.click("#inpaint-kind-mask");
  log(`inpaint sketch: mask of ${sn} px from the painted colour`);
}

// A LoRA card: its preview image, a click puts the tag into the prompt, the infotext names it.
export async function checkLora(page, opts) {
  await page.click("#tab-txt2img");
  const sel = `#network-cards .card[data-name="${opts.lora}"]`;
  await page.waitForSelector(sel);
  if (opts.loraPreview) {
    await page.waitForFunction((s) => { const i = document.querySelector(s + " img"); return i && i.complete && i.naturalWidth > 0; }, sel, { timeout: 10000 });
  }
  await page.fill("#prompt", "a cat");
  await page.click(sel);
  const prompt = await page.inputValue("#prompt");
  check(prompt === `a cat <lora:${opts.lora}:1>`, `the LoRA card made the prompt ${JSON.stringify(prompt)}`);
  check(await page.$eval(sel, (c) => c.classList.contains("active")), "the card is not marked active");
  // Ctrl+Up on the LoRA tag, then on a word
  await page.focus("#prompt");
  await page.$eval("#prompt", (a) => a.setSelectionRange(a.value.length - 3, a.value.length - 3));
  // A1111's steps: 0.05 in <extra:networks>, 0.1 for (words); (word:1.0) loses its brackets
  await page.keyboard.press("Control+ArrowUp");
  check(await page.inputValue("#prompt") === `a cat <lora:${opts.lora}:1.05>`, `Ctrl+Up in the tag: ${await page.inputValue("#prompt")}`);
  await page.keyboard.press("Control+ArrowDown");
  check(await page.inputValue("#prompt") === `a cat <lora:${opts.lora}:1.0>`, `Ctrl+Down in the tag: ${await page.inputValue("#prompt")}`);
  await page.$eval("#prompt", (a) => a.setSelectionRange(3, 3));
  await page.keyboard.press("Control+ArrowUp");
  await page.keyboard.press("Control+ArrowUp");
  check((await page.inputValue("#prompt")).startsWith("a (cat:1.2) <lora:"), `Ctrl+Up twice on a word: ${await page.inputValue("#prompt")}`);
  await page.keyboard.press("Control+ArrowDown");
  await page.keyboard.press("Control+ArrowDown");
  check(await page.inputValue("#prompt") === `a cat <lora:${opts.lora}:1.0>`, `Ctrl+Down back to 1: ${await page.inputValue("#prompt")}`);
  await page.fill("#width", "64");
  await page.press("#width", "Tab");
  await page.fill("#height", "64");
  await page.press("#height", "Tab");
  await page.fill("#steps", "2");
  await page.fill("#batch-size", "1");
  // this one is also kept in the server's outputs folder (the Rust test counts the files)
  await page.check("#save-images");
  const { request, response } = await generateAndCapture(page, "txt2img", opts.timeout * 1000);
  await page.uncheck("#save-images");
  check(request.save_images === true, "save on the server did not send save_images: true");
  const info = JSON.parse(response.info).infotexts[0];
  check(info.includes("Lora hashes: \"" + opts.lora + ": "), `the infotext lacks Lora hashes: ${info}`);
  log(`LoRA card: prompt tag, Ctrl+Up/Down weights; infotext ${info.match(/Lora hashes: "[^"]*"/)[0]}`);
  await page.click(sel);
  check(await page.inputValue("#prompt") === "a cat", `a second click left ${await page.inputValue("#prompt")}`);
}

// Ctrl+Enter in the prompt starts a job, Esc interrupts it.
export async function checkKeys(page, opts) {
  await page.click("#tab-txt2img");
  await page.fill("#steps", "150");
  await page.fill("#width", "64");
  await page.press("#width", "Tab");
  const interrupt = page.waitForRequest((r) => r.url().endsWith("/sdapi/v1/interrupt"), { timeout: 30000 });
  await page.focus("#prompt");
  await page.keyboard.press("Control+Enter");
  await page.waitForSelector("body[data-running=true]", { timeout: 10000 });
  await page.keyboard.press("Escape");
  await interrupt;
  await page.waitForSelector("body[data-running=false]", { timeout: opts.timeout * 1000 });
  const st = await page.getAttribute("#progress", "data-state");
  check(st === "interrupted", `after Esc the progress state is ${st}`);
  await page.fill("#steps", "2");
  log("keys: Ctrl+Enter generated, Esc interrupted");
}

// Hires fix from txt2img, and Extras.
export async function checkHiresAndExtras(page, opts, photoFile) {
  await page.click("#tab-txt2img");
  await page.check("#enable-hr");
  await page.selectOption("#hr-upscaler", "Latent");
  await page.fill("#hr-scale", "2");
  await page.fill("#hr-steps", "2");
  const { request, response } = await generateAndCapture(page, "txt2img", opts.timeout * 1000);
  check(request.enable_hr === true && request.hr_scale === 2 && request.hr_upscaler === "Latent" && request.hr_second_pass_steps === 2, `hires request: ${JSON.stringify(request)}`);
  const img = decodePng(Buffer.from(response.images[0], "base64"));
  check(img.width === 128 && img.height === 128, `the hires picture is ${img.width}x${img.height}`);
  await page.uncheck("#enable-hr");
  log("hires fix: 64x64 -> 128x128 with Latent");
  await page.click("#tab-extras");
  // a pasted picture lands in the open tab
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true }));
  }, fs.readFileSync(photoFile).toString("base64"));
  await page.waitForSelector("#extras-drop[data-loaded=true]");
  await page.selectOption("#extras-upscaler", "Lanczos");
  // a refused value is named next to its field
  await page.fill("#extras-resize", "0");
  await page.click("#extras-run");
  await page.waitForSelector(".field-error[data-for=upscaling_resize]", { timeout: 10000 });
  check(await page.isVisible("#extras-error"), "the Extras error is not shown");
  await page.fill("#extras-resize", "2");
  await page.click("#extras-run");
  await page.waitForFunction(() => { const i = document.querySelector("#extras-result img"); return (i && i.complete && i.naturalWidth > 0) || !document.getElementById("extras-error").hidden; }, null, { timeout: opts.timeout * 1000 });
  check(await page.isHidden("#extras-error"), `extras: ${await page.textContent("#extras-error")}`);
  const w = await page.$eval("#extras-result img", (i) => i.naturalWidth);
  check(w === 128, `the Extras result is ${w} wide, not 128`);
  log("extras: Lanczos x2 -> 128 px");
}

// The history after a reload, and "send to inpaint" from it.
export async function checkHistory(page, minItems) {
  await page.reload({ waitUntil: "load" });
  await page.waitForSelector("body[data-ready=true]");
  await page.fill("#prompt", "");
  await page.click("#tab-history");
  await page.waitForFunction((n) => document.querySelectorAll("#history-grid .history-item").length >= n, minItems, { timeout: 10000 });
  // every stored picture is shown (the grid fills one card at a time)
  await page.waitForFunction(async () => document.querySelectorAll("#history-grid .history-item").length ===
    (await window.Sumi.history.all()).length, null, { timeout: 10000 });
  const n = await page.$$eval("#history-grid .history-item", (l) => l.length);
  await page.waitForFunction(() => [...document.querySelectorAll("#history-grid img")].every((i) => i.complete && i.naturalWidth > 0));
  // "reuse parameters" of the LoRA picture fills its prompt and opens txt2img
  const loraItem = page.locator("#history-grid .history-item", { hasText: "Lora hashes" }).first();
  if (await loraItem.count()) {
    await loraItem.locator(".use-settings").click();
    check(await page.getAttribute("#tab-txt2img", "aria-selected") === "true", "reuse parameters did not open txt2img");
    check((await page.inputValue("#prompt")).includes("<lora:"), `reuse parameters filled the prompt ${await page.inputValue("#prompt")}`);
    await page.click("#tab-history");
  }
  await page.click("#history-grid .history-item .send-inpaint");
  await page.waitForSelector("#inpaint-drop[data-loaded=true]");
  check(await page.getAttribute("#tab-inpaint", "aria-selected") === "true", "send to inpaint did not open the inpaint tab");
  const kinds = await page.evaluate(async () => (await window.Sumi.history.all()).map((h) => h.mode).join(" "));
  check(n >= minItems, `the history shows ${n} pictures, expected ${minItems} or more (${kinds})`);
  log(`history after reload: ${n} pictures (${kinds}); reuse parameters and send to inpaint work`);
}

// Words allowed in the Chinese page (A1111's zh_CN keeps them too).
const ALLOWED = ["CFG", "LoRA", "PNG", "JPEG", "WebP", "Ctrl", "Enter", "Esc", "Sumi", "JSON"];
// The visible English text (text nodes, placeholders, titles, aria labels) outside translate="no".
export function englishLeft(page) {
  return page.evaluate((allowed) => {
    const found = [];
    const english = (s) => {
      let rest = String(s);
      for (const a of allowed) rest = rest.split(a).join(" ");
      return /[A-Za-z]{2,}/.test(rest);
    };
    const skip = (n) => n.closest("[translate=no], script, style, textarea, option:not(:checked)");
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const p = n.parentElement;
      if (!p || skip(p) || !p.checkVisibility({ visibilityProperty: true })) continue;
      if (english(n.textContent)) found.push(n.textContent.trim().slice(0, 60));
    }
    for (const e of document.body.querySelectorAll("[placeholder], [title], [aria-label], [alt]")) {
      if (skip(e) || !e.checkVisibility()) continue;
      for (const a of ["placeholder", "title", "aria-label", "alt"]) {
        const v = e.getAttribute(a);
        if (v && english(v)) found.push(`${a}="${v.slice(0, 60)}"`);
      }
    }
    return found;
  }, ALLOWED);
}

// Screenshots of every panel in both languages; in Chinese, no English may be left.
export async function checkLanguages(page, artifacts) {
  fs.mkdirSync(artifacts, { recursive: true });
  const panels = ["txt2img", "img2img", "inpaint", "extras", "history"];
  for (const lang of ["en", "zh-CN"]) {
    await page.selectOption("#lang", lang);
    for (const p of panels) {
      await page.click(`#tab-${p}`);
      if (p === "inpaint" && lang === "en") {
        // a mask stroke, so that the screenshots show one
        const pts = await toPage(page, "#mask-canvas", [[14, 44], [50, 40]]);
        await page.mouse.move(...pts[0]);
        await page.mouse.down();
        await page.mouse.move(...pts[1], { steps: 6 });
        await page.mouse.up();
      }
      await page.waitForTimeout(p === "history" ? 300 : 50);
      await page.evaluate(() => document.activeElement && document.activeElement.blur());
      await page.screenshot({ path: path.join(artifacts, `web_${p}_${lang}.png`), fullPage: true });
      if (lang === "zh-CN") {
        const left = await englishLeft(page);
        check(left.length === 0, `the ${p} panel in Chinese still shows English: ${left.join(" | ")}`);
        check(await page.textContent("#tab-inpaint") === "局部重绘", "the inpaint tab is not 局部重绘");
      }
    }
  }
  check(await page.textContent("label[for=strength]") === "重绘幅度", "denoising strength is not 重绘幅度");
  log(`languages: ${panels.length} panels x 2 languages in ${artifacts}; no English left in 中文`);
  await page.selectOption("#lang", "en");
}
