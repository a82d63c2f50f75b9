#!/usr/bin/env node
// The page's default size follows the checkpoint (Debian's headless Chromium via
// playwright-core), against `sumi serve` with an SD1 and an SDXL checkpoint in --models-dir,
// the SD1 one loaded: the page opens at 512²; choosing the SDXL checkpoint sets 1024² (the
// listing's `latent_space` is "sdxl") and switches the server's model; choosing the SD1 one sets
// 512² again; a size the user typed (640²) stays when the checkpoint changes; a reload with the
// SDXL model loaded opens at 1024².
//
//   node tools/webtest/model_size_test.mjs --url http://127.0.0.1:7860/ --sd one --sdxl xl
//
// --sd/--sdxl: the checkpoints' model names; --chromium PATH (/usr/bin/chromium); --timeout
// SECONDS (120). Exits 0 when every check passes; otherwise prints "model_size_test: FAIL: ..."
// and exits 1.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { Failure, check } from "./feature_checks.mjs";

const log = (msg) => console.log(`model_size_test: ${msg}`);

function parseArgs(argv) {
  const opts = { url: null, sd: null, sdxl: null, chromium: "/usr/bin/chromium", timeout: 120 };
  for (let i = 2; i < argv.length; i++) {
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case "--url": opts.url = value(); break;
      case "--sd": opts.sd = value(); break;
      case "--sdxl": opts.sdxl = value(); break;
      case "--chromium": opts.chromium = value(); break;
      case "--timeout": opts.timeout = Number(value()); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  for (const k of ["url", "sd", "sdxl"]) if (!opts[k]) throw new Error(`--${k} is required`);
  return opts;
}

const size = async (page) => [Number(await page.inputValue("#width")), Number(await page.inputValue("#height"))];

async function expectSize(page, want, when) {
  const got = await size(page);
  check(got[0] === want[0] && got[1] === want[1], `${when}: the size is ${got.join("x")}, expected ${want.join("x")}`);
  log(`${when}: ${got.join("x")}`);
}

async function opened(page, url) {
  const resp = await page.goto(url, { waitUntil: "load" });
  check(resp && resp.ok(), `GET ${url} answered ${resp ? resp.status() : "nothing"}`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 20000 });
  check(await page.isHidden("#error"), `the page shows an error after loading: ${await page.textContent("#error")}`);
}

// Chooses the checkpoint titled `title` and waits until the server has switched to it.
async function choose(page, title) {
  await page.selectOption("#model", title);
  await page.waitForSelector("#model:not([disabled])", { timeout: 60000 });
  check(await page.isHidden("#error"), `switching to ${title} shows an error: ${await page.textContent("#error")}`);
}

async function run(opts, page) {
  await opened(page, opts.url);
  const models = await page.$$eval("#model option", (os) => os.map((o) => ({ title: o.value, space: o.dataset.latentSpace })));
  const title = (name) => {
    const m = models.find((o) => o.title.startsWith(`${name}.safetensors [`));
    check(m, `no checkpoint ${name} in the list: ${JSON.stringify(models)}`);
    return m;
  };
  const sd = title(opts.sd);
  const xl = title(opts.sdxl);
  check(sd.space === "sd" && xl.space === "sdxl", `latent spaces ${JSON.stringify(models)}`);
  check(await page.inputValue("#model") === sd.title, `the SD1 checkpoint is not the selected one`);
  await expectSize(page, [512, 512], "opened on the SD1 checkpoint");
  await choose(page, xl.title);
  await expectSize(page, [1024, 1024], "the SDXL checkpoint chosen");
  await choose(page, sd.title);
  await expectSize(page, [512, 512], "the SD1 checkpoint chosen again");
  for (const id of ["#width", "#height"]) {
    await page.fill(id, "640");
    await page.dispatchEvent(id, "change");
  }
  await choose(page, xl.title);
  await expectSize(page, [640, 640], "a typed size, the SDXL checkpoint chosen");
  await opened(page, opts.url);
  check(await page.inputValue("#model") === xl.title, `after a reload the SDXL checkpoint is not the selected one`);
  await expectSize(page, [1024, 1024], "reloaded with the SDXL checkpoint loaded");
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv);
  } catch (e) {
    console.error(`model_size_test: FAIL: ${e.message}`);
    return 1;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sumi-webtest-"));
  const guard = setTimeout(() => {
    console.error(`model_size_test: FAIL: gave up after ${opts.timeout} s`);
    process.exit(1);
  }, opts.timeout * 1000);
  let ctx = null;
  try {
    ctx = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
      executablePath: opts.chromium,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
      locale: "en-US",
      timeout: 60000,
    });
    ctx.setDefaultTimeout(20000);
    // nothing may leave the server on 127.0.0.1
    const origin = new URL(opts.url).origin;
    await ctx.route("**/*", (route) => {
      const u = new URL(route.request().url());
      return u.origin === origin || u.protocol === "data:" || u.protocol === "blob:" ? route.continue() : route.abort();
    });
    await run(opts, ctx.pages()[0] || await ctx.newPage());
    log("PASS");
    return 0;
  } catch (e) {
    console.error(`model_size_test: FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
    return 1;
  } finally {
    clearTimeout(guard);
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

process.exitCode = await main();
