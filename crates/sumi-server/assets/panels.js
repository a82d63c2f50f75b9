// The page's side panels: extra-network cards (LoRA, embeddings, hypernetworks), the history
// gallery kept in IndexedDB, and Extras (upscale one picture).
"use strict";
window.Sumi = window.Sumi || {};
(() => {
  const $ = (id) => document.getElementById(id);
  const t = (k, v) => window.Sumi.t(k, v);
  const app = () => window.Sumi.app;
  const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  // ---------- extra networks ----------
  const nets = { kind: "lora", lists: { lora: [], embedding: [], hypernetwork: [] } };
  // The prompt text a card adds, and a pattern finding it (any weight) in the prompt.
  function tagOf(kind, name) {
    if (kind === "lora") return { text: "<lora:" + name + ":1>", re: new RegExp("\\s*<lora:" + escapeRe(name) + "(:[^>]*)?>") };
    if (kind === "hypernetwork") return { text: "<hypernet:" + name + ":1>", re: new RegExp("\\s*<hypernet:" + escapeRe(name) + "(:[^>]*)?>") };
    return { text: name, re: new RegExp("(^|[\\s,(])" + escapeRe(name) + "(?=$|[\\s,:)])") };
  }
  async function loadNetworks() {
    const api = app().api;
    const [loras, embeddings, hypers] = await Promise.all([
      api("GET", "/loras"), api("GET", "/embeddings"), api("GET", "/hypernetworks"),
    ]);
    nets.lists.lora = (loras || []).map((l) => l.name);
    nets.lists.embedding = Object.keys((embeddings && embeddings.loaded) || {});
    nets.lists.hypernetwork = (hypers || []).map((h) => h.name);
    renderCards();
  }
  function renderCards() {
    const box = $("network-cards");
    const q = $("network-search").value.trim().toLowerCase();
    box.textContent = "";
    const prompt = $("prompt").value;
    for (const name of nets.lists[nets.kind]) {
      if (q && !name.toLowerCase().includes(q)) continue;
      const card = document.createElement("button");
      card.type = "button";
      card.className = "card";
      card.dataset.kind = nets.kind;
      card.dataset.name = name;
      card.title = tagOf(nets.kind, name).text;
      card.setAttribute("translate", "no");
      card.classList.toggle("active", tagOf(nets.kind, name).re.test(prompt));
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = "";
      img.loading = "lazy";
      img.src = "/sumi/network-preview?kind=" + nets.kind + "&name=" + encodeURIComponent(name);
      img.addEventListener("error", () => {
        const ph = document.createElement("span");
        ph.className = "thumb";
        ph.setAttribute("aria-hidden", "true");
        ph.setAttribute("translate", "no");
        ph.textContent = name.slice(0, 1).toUpperCase();
        img.replaceWith(ph);
      });
      const label = document.createElement("span");
      label.className = "name";
      label.setAttribute("translate", "no");
      label.textContent = name;
      card.append(img, label);
      card.addEventListener("click", () => toggleNetwork(nets.kind, name));
      box.appendChild(card);
    }
  }
  // Adds the network's tag to the prompt, or takes it out when it is there (A1111's card click).
  function toggleNetwork(kind, name) {
    const area = $("prompt");
    const tag = tagOf(kind, name);
    const v = area.value;
    if (tag.re.test(v)) {
      area.value = v.replace(tag.re, (m, lead) => (kind === "embedding" && lead ? lead : "")).trim();
    } else {
      area.value = v + (v && !/\s$/.test(v) ? " " : "") + tag.text;
    }
    area.dispatchEvent(new Event("input", { bubbles: true }));
  }
  function markActive() {
    const prompt = $("prompt").value;
    document.querySelectorAll("#network-cards .card").forEach((c) => {
      c.classList.toggle("active", tagOf(c.dataset.kind, c.dataset.name).re.test(prompt));
    });
  }

  // ---------- history (IndexedDB) ----------
  const HISTORY_MAX = 60;      // entries kept
  const FULL_IMAGES = 24;      // newest entries that keep the full picture; older keep the thumbnail
  const THUMB = 256;
  let dbPromise = null;
  function db() {
    if (!dbPromise) {
      dbPromise = new Promise((resolve, reject) => {
        const r = indexedDB.open("sumi", 1);
        r.onupgradeneeded = () => r.result.createObjectStore("history", { keyPath: "id", autoIncrement: true });
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error || new Error("IndexedDB"));
      });
    }
    return dbPromise;
  }
  function tx(mode, fn) {
    return db().then((d) => new Promise((resolve, reject) => {
      const x = d.transaction("history", mode);
      const out = fn(x.objectStore("history"));
      x.oncomplete = () => resolve(out && out.result !== undefined ? out.result : out);
      x.onerror = () => reject(x.error || new Error("IndexedDB"));
    }));
  }
  function thumbnail(dataUrl) {
    return new Promise((resolve) => {
      const img = new Image();
      img.onload = () => {
        const k = Math.min(1, THUMB / Math.max(img.naturalWidth, img.naturalHeight));
        const c = document.createElement("canvas");
        c.width = Math.max(1, Math.round(img.naturalWidth * k));
        c.height = Math.max(1, Math.round(img.naturalHeight * k));
        c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
        resolve(c.toDataURL("image/jpeg", 0.85));
      };
      img.onerror = () => resolve(null);
      img.src = dataUrl;
    });
  }
  async function addHistory(entry) {
    const thumb = await thumbnail(entry.dataUrl);
    await tx("readwrite", (s) => s.add({
      time: Date.now(), mode: entry.mode, info: entry.info, seed: entry.seed, name: entry.name,
      thumb, image: entry.dataUrl.length < 8 * 1024 * 1024 ? entry.dataUrl : null,
    }));
    // bound the store: the oldest entries go, the older ones lose their full picture
    const all = await allHistory();
    await tx("readwrite", (s) => {
      all.forEach((h, i) => {
        if (i >= HISTORY_MAX) s.delete(h.id);
        else if (i >= FULL_IMAGES && h.image) s.put(Object.assign({}, h, { image: null }));
      });
    });
    if (document.body.dataset.mode === "history") renderHistory();
  }
  async function allHistory() {
    const list = await tx("readonly", (s) => s.getAll());
    return (list || []).sort((a, b) => b.id - a.id);
  }
  async function renderHistory() {
    const grid = $("history-grid");
    let list = [];
    try { list = await allHistory(); } catch (e) { app().showError(t("err_history", { msg: e.message })); }
    grid.textContent = "";
    $("history-count").textContent = t("history_count", { n: list.length });
    $("history-count").dataset.count = String(list.length);
    for (const h of list) {
      const fig = document.createElement("figure");
      fig.className = "history-item";
      fig.dataset.id = String(h.id);
      const img = document.createElement("img");
      img.src = h.image || h.thumb;
      img.alt = h.seed !== undefined && h.seed !== null ? t("seed_n", { seed: h.seed }) : t("image");
      const info = document.createElement("div");
      info.className = "infotext";
      info.setAttribute("translate", "no");
      info.textContent = h.info || "";
      const actions = document.createElement("div");
      actions.className = "result-actions";
      const del = document.createElement("button");
      del.type = "button";
      del.dataset.i18n = "delete";
      del.textContent = t("delete");
      del.addEventListener("click", async () => { await tx("readwrite", (s) => s.delete(h.id)); renderHistory(); });
      actions.append(...await app().pictureActions(h.image || h.thumb, h.info || "", h.name || "sumi.png", undefined, h.mode), del);
      fig.append(img, info, actions);
      grid.appendChild(fig);
    }
  }

  // ---------- extras ----------
  const extras = { image: null };
  async function setExtrasImage(file, name) {
    const a = app();
    try {
      const dataUrl = typeof file === "string" ? file : await a.readDataUrl(file);
      const size = await a.imageSize(dataUrl);
      extras.image = { dataUrl, name: name || file.name };
      $("extras-preview").src = dataUrl;
      $("extras-preview").hidden = false;
      $("extras-meta").textContent = extras.image.name + " · " + size.width + "×" + size.height;
      $("extras-drop").dataset.loaded = "true";
    } catch (e) {
      showExtrasError(e.message);
    }
  }
  function showExtrasError(msg) {
    const box = $("extras-error");
    box.textContent = msg;
    box.hidden = !msg;
  }
  async function runExtras() {
    showExtrasError("");
    window.Sumi.fieldErrors.clear();
    if (!extras.image) return showExtrasError(t("err_extras_no_image"));
    const btn = $("extras-run");
    btn.disabled = true;
    btn.textContent = t("upscaling");
    try {
      const u = extras.image.dataUrl;
      const res = await app().api("POST", "/extra-single-image", {
        image: u.slice(u.indexOf(",") + 1), resize_mode: 0, upscaler_1: $("extras-upscaler").value,
        upscaling_resize: Number($("extras-resize").value),
      });
      const dataUrl = "data:image/png;base64," + res.image;
      const out = $("extras-result");
      out.textContent = "";
      const img = document.createElement("img");
      img.src = dataUrl;
      window.Sumi.setText(img, "result_n", { n: 1 }, "alt");
      const info = document.createElement("div");
      info.className = "hint";
      info.setAttribute("translate", "no");
      info.textContent = String(res.html_info || "").replace(/<[^>]*>/g, " ");
      const actions = document.createElement("div");
      actions.className = "result-actions";
      const name = "sumi-extras-" + Date.now() + ".png";
      // an upscaled picture has no generation parameters to reuse
      actions.append(...(await app().pictureActions(dataUrl, "", name)).filter((b) => !b.classList.contains("use-settings")));
      out.append(img, info, actions);
      await addHistory({ mode: "extras", dataUrl, info: info.textContent, name });
    } catch (e) {
      showExtrasError(e.message);
      window.Sumi.fieldErrors.show(e.detail || "");
    } finally {
      btn.disabled = false;
      btn.textContent = t("upscale");
    }
  }

  function init() {
    document.querySelectorAll(".net-tab").forEach((b) => b.addEventListener("click", () => {
      nets.kind = b.dataset.kind;
      document.querySelectorAll(".net-tab").forEach((x) => x.setAttribute("aria-selected", String(x === b)));
      renderCards();
    }));
    $("network-search").addEventListener("input", renderCards);
    $("network-refresh").addEventListener("click", async () => {
      try {
        await app().api("POST", "/refresh-loras");
        await loadNetworks();
      } catch (e) {
        app().showError(t("err_networks", { msg: e.message }));
      }
    });
    $("prompt").addEventListener("input", markActive);
    $("history-clear").addEventListener("click", async () => { await tx("readwrite", (s) => s.clear()); renderHistory(); });
    app().wireDrop($("extras-drop"), $("extras-file"), (f) => setExtrasImage(f));
    $("extras-run").addEventListener("click", runExtras);
    window.Sumi.onLang(() => { if (document.body.dataset.mode === "history") renderHistory(); });
  }

  Object.assign(window.Sumi, {
    panels: { init },
    networks: { load: loadNetworks, toggle: toggleNetwork },
    history: { add: addHistory, render: renderHistory, all: allHistory },
    extras: { setImage: setExtrasImage },
  });
})();
