"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const t = window.Sumi.t;
  const el = {
    tabs: [...document.querySelectorAll(".tabs [role=tab]")], controls: $("controls"),
    initZone: $("init-image"), initFile: $("init-file"), initPreview: $("init-preview"),
    initHint: $("init-hint"), initMeta: $("init-meta"), initClear: $("init-clear"),
    prompt: $("prompt"), negative: $("negative-prompt"), sampler: $("sampler"), scheduler: $("scheduler"),
    steps: $("steps"), cfg: $("cfg"), resizeMode: $("resize-mode"), width: $("width"), height: $("height"),
    swap: $("swap-size"), lock: $("lock-aspect"), batchCount: $("batch-count"), batchSize: $("batch-size"),
    strength: $("strength"), strengthValue: $("strength-value"), seed: $("seed"),
    seedRandom: $("seed-random"), seedReuse: $("seed-reuse"),
    pngDrop: $("pnginfo-drop"), pngFile: $("pnginfo-file"), pngStatus: $("pnginfo-status"),
    pngDetails: $("pnginfo-details"), pngText: $("pnginfo-text"),
    generate: $("generate"), interrupt: $("interrupt"), skip: $("skip"),
    error: $("error"), errorMsg: document.querySelector("#error .msg"), errorClose: $("error-close"),
    progress: $("progress"), progressFill: document.querySelector("#progress .fill"),
    progressStatus: document.querySelector("#progress .status"), progressEta: document.querySelector("#progress .eta"),
    previewWrap: $("preview-wrap"), preview: $("preview"), results: $("results"), model: $("model"),
    lang: $("lang"), inpaintDrop: $("inpaint-drop"), inpaintFile: $("inpaint-file"), maskDrop: $("mask-drop"),
    maskFile: $("mask-file"), maskBlur: $("mask-blur"), maskAlpha: $("mask-alpha"), inpaintPadding: $("inpaint-padding"),
    maskWeight: $("mask-weight"), enableHr: $("enable-hr"), hrUpscaler: $("hr-upscaler"), hrSteps: $("hr-steps"),
    hrDenoising: $("hr-denoising"), hrScale: $("hr-scale"), hrResizeX: $("hr-resize-x"), hrResizeY: $("hr-resize-y"),
  };
  const radio = (name) => Number((document.querySelector("input[name=" + name + "]:checked") || {}).value || 0);

  const state = {
    mode: "img2img",
    init: null,          // {dataUrl, width, height, name}
    ratio: 1,            // width / height kept while the lock is on and there is no input image
    lastSeed: null,
    running: false,
    interrupted: false,
    pollTimer: null,
    pollBusy: false,
    blobUrls: [],
  };

  // ---------- errors ----------
  const api = window.Sumi.api;
  const showFieldErrors = window.Sumi.fieldErrors.show, clearFieldErrors = window.Sumi.fieldErrors.clear;
  // Shows `message` above the results, and the lines of `detail` (the API's) that name a field
  // next to that field.
  function showError(message, detail) {
    el.errorMsg.textContent = message;
    el.errorMsg.setAttribute("translate", "no");
    el.error.hidden = false;
    showFieldErrors(detail || message);
  }
  function clearError() {
    el.errorMsg.textContent = "";
    el.error.hidden = true;
    clearFieldErrors();
  }
  el.errorClose.addEventListener("click", clearError);

  // ---------- tabs ----------
  // Shows the elements whose data-modes list `mode` and hides the others.
  function setMode(mode) {
    state.mode = mode;
    for (const tab of el.tabs) {
      const on = tab.dataset.mode === mode;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on) el.controls.setAttribute("aria-labelledby", tab.id);
    }
    document.querySelectorAll("[data-modes]").forEach((n) => { n.hidden = !n.dataset.modes.split(" ").includes(mode); });
    document.body.dataset.mode = mode;
    if (state.mode === "history" && window.Sumi.history) window.Sumi.history.render();
    const pic = currentPicture();
    if (pic && el.lock.checked) fitToImage();
  }
  for (const tab of el.tabs) {
    tab.addEventListener("click", () => setMode(tab.dataset.mode));
    tab.addEventListener("keydown", (e) => {
      const i = el.tabs.indexOf(tab);
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: el.tabs.length - 1 }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      const target = el.tabs[(to + el.tabs.length) % el.tabs.length];
      target.click();
      target.focus();
    });
  }
  // The picture the size follows: the img2img input or the picture being inpainted.
  function currentPicture() {
    if (state.mode === "img2img") return state.init;
    if (state.mode === "inpaint") return window.Sumi.editor.loaded();
    return null;
  }

  // ---------- size ----------
  const MIN_SIZE = 64, MAX_SIZE = 2048;
  function round8(v) {
    const n = Math.round(Number(v) / 8) * 8;
    if (!Number.isFinite(n)) return 512;
    return Math.min(MAX_SIZE, Math.max(MIN_SIZE, n));
  }
  function currentRatio() {
    const pic = currentPicture();
    return pic ? pic.width / pic.height : state.ratio;
  }
  function onSizeChange(changed) {
    const w = round8(el.width.value), h = round8(el.height.value);
    if (el.lock.checked) {
      const r = currentRatio();
      if (changed === "width") {
        el.width.value = w;
        el.height.value = round8(w / r);
      } else {
        el.height.value = h;
        el.width.value = round8(h * r);
      }
    } else {
      el.width.value = w;
      el.height.value = h;
    }
  }
  el.width.addEventListener("change", () => onSizeChange("width"));
  el.height.addEventListener("change", () => onSizeChange("height"));
  el.lock.addEventListener("change", () => {
    if (el.lock.checked) {
      if (currentPicture()) fitToImage();
      else state.ratio = round8(el.width.value) / round8(el.height.value);
    }
  });
  el.swap.addEventListener("click", () => {
    const w = el.width.value;
    el.width.value = el.height.value;
    el.height.value = w;
    state.ratio = round8(el.width.value) / round8(el.height.value);
    if (currentPicture() && el.lock.checked) el.lock.checked = false;
  });
  // Keeps the longer side of the current size and gives the other side the image's aspect ratio.
  function fitToImage() {
    const pic = currentPicture();
    if (!pic) return;
    const r = pic.width / pic.height;
    const long = Math.max(round8(el.width.value), round8(el.height.value));
    if (r >= 1) {
      el.width.value = long;
      el.height.value = round8(long / r);
    } else {
      el.height.value = long;
      el.width.value = round8(long * r);
    }
  }

  // ---------- strength ----------
  function setStrength(v, from) {
    let n = Number(v);
    if (!Number.isFinite(n)) return;
    n = Math.min(1, Math.max(0, n));
    const s = (Math.round(n * 100) / 100).toFixed(2);
    if (from !== el.strength) el.strength.value = s;
    if (from !== el.strengthValue) el.strengthValue.value = s;
  }
  el.strength.addEventListener("input", () => setStrength(el.strength.value, el.strength));
  el.strength.addEventListener("change", () => setStrength(el.strength.value, el.strength));
  el.strengthValue.addEventListener("input", () => setStrength(el.strengthValue.value, el.strengthValue));
  el.strengthValue.addEventListener("change", () => setStrength(el.strengthValue.value, null));

  // ---------- seed ----------
  el.seedRandom.addEventListener("click", () => { el.seed.value = -1; });
  el.seedReuse.addEventListener("click", () => {
    if (state.lastSeed !== null) el.seed.value = state.lastSeed;
  });

  // ---------- files ----------
  function readDataUrl(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(new Error(t("err_read", { name: file.name || "" })));
      r.readAsDataURL(file);
    });
  }
  function imageSize(dataUrl) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
      img.onerror = () => reject(new Error(t("err_not_image")));
      img.src = dataUrl;
    });
  }
  function base64Of(dataUrl) {
    const i = dataUrl.indexOf(",");
    return i >= 0 ? dataUrl.slice(i + 1) : dataUrl;
  }
  function wireDrop(zone, input, handler) {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragover"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragover");
      const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (f) handler(f);
    });
    input.addEventListener("change", () => {
      const f = input.files && input.files[0];
      if (f) handler(f);
      input.value = "";
    });
    zone.addEventListener("keydown", (e) => {
      if (e.target === zone && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); input.click(); }
    });
  }

  async function setInitImage(file, name) {
    clearError();
    try {
      const dataUrl = typeof file === "string" ? file : await readDataUrl(file);
      const size = await imageSize(dataUrl);
      state.init = { dataUrl, width: size.width, height: size.height, name: name || (file && file.name) || t("image") };
      el.initPreview.src = dataUrl;
      el.initPreview.hidden = false;
      el.initHint.dataset.i18n = "drop_replace";
      el.initHint.textContent = t("drop_replace");
      el.initMeta.textContent = state.init.name + " · " + size.width + "×" + size.height;
      el.initClear.hidden = false;
      el.initZone.dataset.loaded = "true";
      if (el.lock.checked) fitToImage();
    } catch (e) {
      showError(e.message);
    }
  }
  function clearInitImage() {
    state.init = null;
    el.initPreview.hidden = true;
    el.initPreview.removeAttribute("src");
    el.initHint.dataset.i18n = "drop_image";
    el.initHint.textContent = t("drop_image");
    el.initMeta.textContent = "";
    el.initClear.hidden = true;
    delete el.initZone.dataset.loaded;
  }
  wireDrop(el.initZone, el.initFile, (f) => setInitImage(f));
  el.initClear.addEventListener("click", clearInitImage);
  // Shows `file` (a File or a data URL) in the inpaint editor.
  async function setInpaintImage(file, name) {
    clearError();
    try {
      const dataUrl = typeof file === "string" ? file : await readDataUrl(file);
      await window.Sumi.editor.load(dataUrl, name || (file && file.name) || t("image"));
      if (el.lock.checked) fitToImage();
    } catch (e) {
      showError(e.message);
    }
  }
  wireDrop(el.inpaintDrop, el.inpaintFile, (f) => setInpaintImage(f));
  wireDrop(el.maskDrop, el.maskFile, async (f) => {
    try { await window.Sumi.editor.uploadMask(await readDataUrl(f)); } catch (e) { showError(e.message); }
  });
  $("inpaint-remove").addEventListener("click", () => window.Sumi.editor.remove());
  document.addEventListener("paste", (e) => {
    if (!e.clipboardData) return;
    const to = { img2img: setInitImage, inpaint: setInpaintImage, extras: (f, n) => window.Sumi.extras.setImage(f, n) }[state.mode];
    if (!to) return;
    for (const item of e.clipboardData.items) {
      if (item.kind === "file" && item.type.startsWith("image/")) {
        const f = item.getAsFile();
        if (f) { e.preventDefault(); to(f, t("pasted_image")); }
        return;
      }
    }
  });

  const parseInfotext = window.Sumi.parseInfotext;

  function selectOption(select, value) {
    if (value == null) return false;
    const want = String(value).trim().toLowerCase();
    for (const opt of select.options) {
      if (opt.value.toLowerCase() === want || opt.textContent.trim().toLowerCase() === want ||
          (opt.dataset.aliases || "").split("|").includes(want)) {
        select.value = opt.value;
        return true;
      }
    }
    return false;
  }

  // Fills the form from parsed infotext fields; returns the list of fields set and not understood.
  function applyParams(p) {
    const set = [], missed = [];
    const num = (v) => (v === undefined || v === null || String(v).trim() === "" ? null : Number(v));
    if (p["Prompt"] !== undefined) { el.prompt.value = p["Prompt"]; set.push("prompt"); }
    if (p["Negative prompt"] !== undefined) { el.negative.value = p["Negative prompt"]; set.push("negative_prompt"); }
    const steps = num(p["Steps"]);
    if (steps !== null && Number.isFinite(steps)) { el.steps.value = steps; set.push("steps"); }
    if (p["Sampler"] !== undefined) {
      let sampler = String(p["Sampler"]);
      let sched = p["Schedule type"];
      if (!selectOption(el.sampler, sampler)) {
        // legacy names such as "DPM++ 2M Karras" = sampler + scheduler
        const m = /^(.*) (Karras|Exponential|Uniform|SGM Uniform|Polyexponential)$/i.exec(sampler);
        if (m && selectOption(el.sampler, m[1])) {
          sampler = m[1];
          if (sched === undefined) sched = m[2];
          set.push("sampler");
        } else {
          missed.push(["sampler", sampler]);
        }
      } else {
        set.push("sampler");
      }
      if (sched !== undefined) {
        if (selectOption(el.scheduler, sched)) set.push("scheduler");
        else missed.push(["scheduler", sched]);
      } else {
        selectOption(el.scheduler, "automatic");
      }
    }
    const cfg = num(p["CFG scale"]);
    if (cfg !== null && Number.isFinite(cfg)) { el.cfg.value = cfg; set.push("cfg"); }
    const seed = num(p["Seed"]);
    if (seed !== null && Number.isFinite(seed)) { el.seed.value = seed; set.push("seed"); }
    const w = num(p["Size-1"]), h = num(p["Size-2"]);
    if (w && h) {
      el.lock.checked = false;
      el.width.value = round8(w);
      el.height.value = round8(h);
      state.ratio = round8(w) / round8(h);
      set.push("size");
    }
    const ds = num(p["Denoising strength"]);
    if (ds !== null && Number.isFinite(ds)) { setStrength(ds, null); set.push("denoising"); }
    // the server's parsed parameters carry A1111's defaults: only the infotext's own keys count
    const hires = p.__hires !== undefined ? p.__hires : p["Hires upscale"] !== undefined || p["Hires resize-1"] !== undefined;
    if (p["Steps"] !== undefined) el.enableHr.checked = hires;
    if (hires) {
      const hs = num(p["Hires upscale"]);
      if (hs) el.hrScale.value = hs;
      if (p["Hires upscaler"] !== undefined && !selectOption(el.hrUpscaler, p["Hires upscaler"])) missed.push(["upscaler", p["Hires upscaler"]]);
      const hst = num(p["Hires steps"]);
      if (hst !== null) el.hrSteps.value = hst;
      if (ds !== null && Number.isFinite(ds)) el.hrDenoising.value = ds;
      set.push("hires");
    }
    return { set, missed };
  }

  // What "reuse parameters" filled (`r` of applyParams, from result `n`), in the current language;
  // rewritten when the language changes.
  function filledText(r, n) {
    state.filled = { r, n };
    const list = r.set.map((k) => t(k)).join(", ") || t("nothing");
    const missed = r.missed.map(([k, v]) => t(k) + " “" + v + "”").join(", ");
    return (n ? t("filled_from", { list, n }) : t("filled", { list })) +
      (r.missed.length ? "\n" + t("not_available", { list: missed }) : "");
  }
  window.Sumi.onLang(() => {
    if (state.filled && el.pngStatus.textContent) el.pngStatus.textContent = filledText(state.filled.r, state.filled.n);
  });
  async function usePngSettings(file) {
    clearError();
    el.pngStatus.textContent = t("reading", { name: file.name || "PNG" });
    try {
      const dataUrl = await readDataUrl(file);
      const res = await api("POST", "/png-info", { image: dataUrl });
      const info = res && typeof res.info === "string" ? res.info : "";
      // an image without infotext still gets A1111's defaults in `parameters`: nothing to reuse
      if (!info.trim()) {
        el.pngStatus.textContent = "";
        el.pngDetails.hidden = true;
        showError(t("err_no_params", { name: file.name || "PNG" }));
        return;
      }
      // the server's parsed parameters win; the page's own parse fills what they lack
      let params = parseInfotext(info);
      if (res.parameters && typeof res.parameters === "object" && Object.keys(res.parameters).length) {
        params = Object.assign(params, res.parameters);
      }
      params.__hires = /(^|, )Hires (upscale|resize)/m.test(info);
      el.pngText.textContent = info;
      el.pngDetails.hidden = !info;
      const r = applyParams(params);
      el.pngStatus.textContent = filledText(r);
    } catch (e) {
      el.pngStatus.textContent = "";
      showError(t("err_png_info", { msg: e.message }));
    }
  }
  wireDrop(el.pngDrop, el.pngFile, usePngSettings);

  // ---------- lists from the API ----------
  function fillSelect(select, items, valueOf, labelOf, aliasesOf, preferred) {
    const keep = select.value;
    select.textContent = "";
    for (const it of items) {
      const o = document.createElement("option");
      o.value = valueOf(it);
      o.textContent = labelOf(it);
      const al = aliasesOf ? aliasesOf(it) : [];
      if (al && al.length) o.dataset.aliases = al.map((a) => String(a).toLowerCase()).join("|");
      select.appendChild(o);
    }
    if (!(keep && selectOption(select, keep))) {
      for (const p of preferred) if (selectOption(select, p)) return;
    }
  }
  async function loadLists() {
    const problems = [];
    const load = async (what, path, use, fallback) => {
      try {
        // `use` may itself fetch (the checkpoint list asks for /options): wait for it too,
        // so the page is ready only once every list is filled
        await use(await api("GET", path));
      } catch (e) {
        problems.push(what + ": " + e.message);
        if (fallback) fallback();
      }
    };
    await Promise.all([
      load(t("sampler"), "/samplers",
        (l) => fillSelect(el.sampler, l, (s) => s.name, (s) => s.name, (s) => s.aliases, ["DPM++ 2M", "Euler a", "Euler"]),
        () => fillSelect(el.sampler, ["Euler a", "Euler", "DPM++ 2M"], (s) => s, (s) => s, null, [])),
      load(t("scheduler"), "/schedulers",
        (l) => fillSelect(el.scheduler, l, (s) => s.name, (s) => s.label || s.name, (s) => s.aliases, ["automatic"]),
        () => fillSelect(el.scheduler, [{ name: "automatic", label: "Automatic" }], (s) => s.name, (s) => s.label, null, [])),
      load(t("upscaler"), "/latent-upscale-modes", async (latent) => {
        let ups = [];
        try { ups = await api("GET", "/upscalers"); } catch (e) { problems.push(t("upscaler") + ": " + e.message); }
        const names = (latent || []).map((m) => m.name).concat((ups || []).map((u) => u.name));
        fillSelect(el.hrUpscaler, names, (n) => n, (n) => n, null, ["Latent"]);
        fillSelect($("extras-upscaler"), (ups || []).map((u) => u.name).filter((n) => n !== "None"), (n) => n, (n) => n, null, ["Lanczos"]);
      }),
      load(t("checkpoint"), "/sd-models", async (models) => {
        const options = await api("GET", "/options");
        el.model.textContent = "";
        for (const m of models || []) {
          const o = document.createElement("option");
          o.value = o.textContent = m.title;
          o.dataset.latentSpace = m.latent_space || "";
          el.model.appendChild(o);
        }
        if (options && options.sd_model_checkpoint) {
          if (![...el.model.options].some((o) => o.value === options.sd_model_checkpoint)) {
            const o = document.createElement("option");
            o.value = o.textContent = options.sd_model_checkpoint;
            el.model.appendChild(o);
          }
          el.model.value = options.sd_model_checkpoint;
        }
        followModelSize();
      }),
      window.Sumi.networks.load().catch((e) => problems.push(t("extra_networks") + ": " + e.message)),
    ]);
    if (problems.length) showError(t("err_load", { list: problems.join("\n") }));
    document.body.dataset.ready = "true";
  }
  // SDXL models default to 1024², SD1/SD2 ones to 512²: a size still at the other kind's
  // default follows the selected checkpoint (a size the user chose stays).
  function followModelSize() {
    const o = el.model.selectedOptions[0];
    const want = o && o.dataset.latentSpace === "sdxl" ? 1024 : 512;
    const other = want === 1024 ? 512 : 1024;
    if (Number(el.width.value) === other && Number(el.height.value) === other) {
      el.width.value = el.height.value = want;
      state.ratio = 1;
    }
  }
  el.model.addEventListener("change", async () => {
    const title = el.model.value;
    followModelSize();
    clearError();
    el.model.disabled = true;
    try {
      await api("POST", "/options", { sd_model_checkpoint: title });
    } catch (e) {
      showError(t("err_switch", { msg: e.message }));
    } finally {
      el.model.disabled = false;
    }
  });

  // ---------- progress ----------
  // `status`: a dictionary key (with `vars`), or plain text when `vars` is null.
  function setProgress(p, stateName, status, eta, vars) {
    const v = Math.min(1, Math.max(0, Number(p) || 0));
    el.progress.hidden = false;
    el.progress.dataset.progress = v.toFixed(3);
    el.progress.dataset.state = stateName;
    el.progress.setAttribute("aria-valuenow", String(Math.round(v * 100)));
    el.progressFill.style.transition = v === 0 ? "none" : "";
    el.progressFill.style.width = (v * 100).toFixed(1) + "%";
    if (status !== undefined && vars === null) {
      delete el.progressStatus.dataset.i18n;
      el.progressStatus.textContent = status;
    } else if (status !== undefined) {
      window.Sumi.setText(el.progressStatus, status, vars);
    }
    if (eta !== undefined) el.progressEta.textContent = eta;
  }
  async function poll() {
    if (state.pollBusy || !state.running) return;
    state.pollBusy = true;
    try {
      const p = await api("GET", "/progress?skip_current_image=false");
      if (!state.running || !p) return;
      const st = p.state || {};
      const parts = [];
      if (st.job_count > 1) parts.push(t("job_n", { n: Number(st.job_no || 0) + 1, total: st.job_count }));
      if (st.sampling_steps) parts.push(t("step_n", { n: st.sampling_step || 0, total: st.sampling_steps }));
      parts.push(Math.round((Number(p.progress) || 0) * 100) + "%");
      const eta = Number(p.eta_relative) > 0 ? t("eta", { s: Number(p.eta_relative).toFixed(1) }) : "";
      setProgress(p.progress, "running", parts.join(" · "), eta, null);
      if (p.current_image) {
        el.preview.onload = () => el.preview.classList.toggle("pixelated", el.preview.naturalWidth < 256);
        el.preview.src = "data:image/png;base64," + p.current_image;
        el.previewWrap.hidden = false;
      }
    } catch (_) {
      // progress is best effort; the generation request reports real errors
    } finally {
      state.pollBusy = false;
    }
  }

  // ---------- generate ----------
  function intOf(input, key, min, max) {
    const name = t(key);
    const v = Number(input.value);
    if (String(input.value).trim() === "" || !Number.isFinite(v)) throw new Error(t("err_number", { name }));
    if (min !== undefined && v < min) throw new Error(t("err_min", { name, min }));
    if (max !== undefined && v > max) throw new Error(t("err_max", { name, max }));
    return v;
  }
  function buildPayload() {
    el.width.value = round8(el.width.value);
    el.height.value = round8(el.height.value);
    const payload = {
      prompt: el.prompt.value,
      negative_prompt: el.negative.value,
      seed: Math.trunc(intOf(el.seed, "seed", -1)),
      sampler_name: el.sampler.value,
      scheduler: el.scheduler.value,
      steps: Math.trunc(intOf(el.steps, "steps", 1)),
      cfg_scale: intOf(el.cfg, "cfg"),
      width: Number(el.width.value),
      height: Number(el.height.value),
      n_iter: Math.trunc(intOf(el.batchCount, "batch_count", 1)),
      batch_size: Math.trunc(intOf(el.batchSize, "batch_size", 1)),
      send_images: true,
      save_images: $("save-images").checked,
    };
    if (state.mode === "txt2img" && el.enableHr.checked) {
      Object.assign(payload, {
        enable_hr: true,
        hr_scale: intOf(el.hrScale, "hr_scale", 1),
        hr_upscaler: el.hrUpscaler.value,
        hr_second_pass_steps: Math.trunc(intOf(el.hrSteps, "hr_steps", 0)),
        denoising_strength: intOf(el.hrDenoising, "denoising", 0, 1),
        hr_resize_x: Math.trunc(intOf(el.hrResizeX, "hr_resize_x", 0)),
        hr_resize_y: Math.trunc(intOf(el.hrResizeY, "hr_resize_y", 0)),
      });
    }
    if (state.mode === "img2img") {
      if (!state.init) throw new Error(t("err_no_init"));
      payload.init_images = [base64Of(state.init.dataUrl)];
    }
    if (state.mode === "inpaint") {
      const blur = Math.trunc(intOf(el.maskBlur, "mask_blur", 0, 64));
      const r = window.Sumi.editor.request(blur, intOf(el.maskAlpha, "mask_alpha", 0, 100));
      Object.assign(payload, {
        init_images: [r.init],
        mask: r.mask,
        mask_blur: blur,
        inpainting_fill: radio("inpainting-fill"),
        inpaint_full_res: radio("inpaint-area") === 1,
        inpaint_full_res_padding: Math.trunc(intOf(el.inpaintPadding, "padding", 0)),
        inpainting_mask_invert: radio("mask-mode"),
        override_settings: { inpainting_mask_weight: intOf(el.maskWeight, "mask_weight", 0, 1) },
      });
    }
    if (state.mode === "img2img" || state.mode === "inpaint") {
      payload.denoising_strength = Number(el.strength.value);
      payload.resize_mode = Number(el.resizeMode.value);
    }
    return payload;
  }

  function setRunning(on) {
    state.running = on;
    el.generate.disabled = on;
    el.generate.dataset.i18n = on ? "generating" : "generate";
    el.generate.textContent = t(el.generate.dataset.i18n);
    el.interrupt.disabled = !on;
    el.skip.disabled = !on;
    document.body.dataset.running = String(on);
  }

  async function dataUrlToBlobUrl(dataUrl) {
    const blob = await (await fetch(dataUrl)).blob();
    const url = URL.createObjectURL(blob);
    state.blobUrls.push(url);
    return url;
  }

  // A button with the text of `key` calling `onClick`.
  function button(key, onClick, cls) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.i18n = key;
    b.textContent = t(key);
    if (cls) b.className = cls;
    b.addEventListener("click", onClick);
    return b;
  }
  // The actions every picture offers (results and history): download, reuse parameters,
  // send to img2img / inpaint.
  // `mode`: where "reuse parameters" leads from the history (the picture's own tab).
  async function pictureActions(dataUrl, text, fileName, resultNo, mode) {
    const a = document.createElement("a");
    a.className = "download";
    a.dataset.i18n = "download";
    a.textContent = t("download");
    a.download = fileName;
    try { a.href = await dataUrlToBlobUrl(dataUrl); } catch (_) { a.href = dataUrl; }
    const use = button("use_settings", () => {
      const r = applyParams(parseInfotext(text));
      el.pngStatus.textContent = filledText(r, resultNo);
      if (state.mode === "history" || state.mode === "extras") {
        setMode(["img2img", "inpaint"].includes(mode) ? mode : "txt2img");
      }
    }, "use-settings");
    const toImg = button("send_img2img", () => {
      setMode("img2img");
      setInitImage(dataUrl, fileName);
    }, "send-img2img");
    const toInpaint = button("send_inpaint", () => {
      setMode("inpaint");
      setInpaintImage(dataUrl, fileName);
    }, "send-inpaint");
    return [a, use, toImg, toInpaint];
  }

  async function showResults(res, mode, payload) {
    let info = res.info;
    if (typeof info === "string") {
      try { info = JSON.parse(info); } catch (_) { info = {}; }
    }
    info = info || {};
    const infotexts = Array.isArray(info.infotexts) ? info.infotexts : [];
    const seeds = Array.isArray(info.all_seeds) ? info.all_seeds : [];
    const images = Array.isArray(res.images) ? res.images : [];
    state.blobUrls.forEach((u) => URL.revokeObjectURL(u));
    state.blobUrls = [];
    el.results.textContent = "";
    if (!images.length) {
      showError(t("err_no_images"));
      return;
    }
    for (let i = 0; i < images.length; i++) {
      const b64 = String(images[i]);
      const dataUrl = b64.startsWith("data:") ? b64 : "data:image/png;base64," + b64;
      const text = infotexts[i] !== undefined ? String(infotexts[i]) : "";
      const seed = seeds[i] !== undefined ? seeds[i] : (i === 0 ? info.seed : undefined);
      const fig = document.createElement("figure");
      fig.className = "result";
      const img = document.createElement("img");
      if (seed !== undefined) window.Sumi.setText(img, "result_seed", { n: i + 1, seed }, "alt");
      else window.Sumi.setText(img, "result_n", { n: i + 1 }, "alt");
      img.addEventListener("load", () => {
        if (img.naturalWidth < 256) img.classList.add("pixelated");
      });
      img.src = dataUrl;
      const cap = document.createElement("figcaption");
      const pre = document.createElement("div");
      pre.className = "infotext";
      pre.setAttribute("translate", "no");
      pre.textContent = text || t("no_infotext");
      const actions = document.createElement("div");
      actions.className = "result-actions";
      const name = "sumi-" + mode + "-" + (seed !== undefined ? seed : Date.now()) + "-" + (i + 1) + ".png";
      actions.append(...await pictureActions(dataUrl, text, name, i + 1));
      cap.append(pre, actions);
      fig.append(img, cap);
      el.results.appendChild(fig);
      // stored before the job counts as done, so that a reload right after finds it
      await window.Sumi.history.add({ mode, dataUrl, info: text, seed, name }).catch((e) => showError(t("err_history", { msg: e.message })));
    }
    const first = seeds.length ? seeds[0] : info.seed;
    if (first !== undefined && first !== null) {
      state.lastSeed = first;
      el.seedReuse.disabled = false;
      el.seedReuse.title = t("seed_reuse") + " (" + first + ")";
    }
  }

  async function generate() {
    if (state.running || !["txt2img", "img2img", "inpaint"].includes(state.mode)) return;
    clearError();
    let payload;
    try {
      payload = buildPayload();
    } catch (e) {
      showError(e.message);
      return;
    }
    const mode = state.mode;
    const endpoint = mode === "txt2img" ? "/txt2img" : "/img2img";
    state.interrupted = false;
    setRunning(true);
    setProgress(0, "running", "starting", "");
    el.previewWrap.hidden = true;
    el.preview.removeAttribute("src");
    state.pollTimer = setInterval(poll, 500);
    poll();
    const started = performance.now();
    try {
      const res = await api("POST", endpoint, payload);
      clearInterval(state.pollTimer);
      state.running = false;
      await showResults(res || {}, mode, payload);
      const s = ((performance.now() - started) / 1000).toFixed(1);
      const n = (res && Array.isArray(res.images)) ? res.images.length : 0;
      setProgress(1, state.interrupted ? "interrupted" : "done", state.interrupted ? "interrupted_n" : "done_n", "", { n, s });
      el.previewWrap.hidden = true;
    } catch (e) {
      clearInterval(state.pollTimer);
      state.running = false;
      setProgress(Number(el.progress.dataset.progress), "error", "failed", "");
      showError(e.message, e.detail);
    } finally {
      clearInterval(state.pollTimer);
      setRunning(false);
    }
  }
  el.generate.addEventListener("click", generate);
  el.controls.addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
    if (e.key === "Escape" && state.running) { e.preventDefault(); el.interrupt.click(); }
  });
  for (const area of [el.prompt, el.negative]) {
    area.addEventListener("keydown", (e) => {
      if (!(e.ctrlKey || e.metaKey) || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
      if (window.Sumi.editAttention(area, e.key === "ArrowUp")) {
        e.preventDefault();
        area.dispatchEvent(new Event("input", { bubbles: true }));
      }
    });
  }
  el.interrupt.addEventListener("click", async () => {
    state.interrupted = true;
    try { await api("POST", "/interrupt"); } catch (e) { showError(t("err_interrupt", { msg: e.message })); }
  });
  el.skip.addEventListener("click", async () => {
    try { await api("POST", "/skip"); } catch (e) { showError(t("err_skip", { msg: e.message })); }
  });

  // the "save on the server" choice is kept in this browser
  try { $("save-images").checked = localStorage.getItem("sumi.save_images") === "true"; } catch (_) { /* storage off */ }
  $("save-images").addEventListener("change", (e) => {
    try { localStorage.setItem("sumi.save_images", String(e.target.checked)); } catch (_) { /* not kept */ }
  });

  // ---------- language ----------
  el.lang.value = window.Sumi.lang();
  el.lang.addEventListener("change", () => window.Sumi.setLang(el.lang.value));
  window.Sumi.apply(document);

  Object.assign(window.Sumi, {
    app: { api, setMode, setInitImage, setInpaintImage, showError, clearError, readDataUrl, imageSize, wireDrop, pictureActions, t },
  });
  window.Sumi.panels.init();
  setMode("img2img");
  loadLists();
})();
