// The inpaint editor: the picture on a canvas with a mask layer (white strokes, shown
// half-transparent) or, for "inpaint sketch", a colour layer painted into the picture. Pointer
// events, so mouse, pen and touch all paint; brush size, eraser, undo, clear, invert, and an
// uploaded mask. `request()` gives the img2img fields A1111 sends for the tab.
"use strict";
window.Sumi = window.Sumi || {};
(() => {
  const $ = (id) => document.getElementById(id);
  const imageCanvas = $("image-canvas"), maskCanvas = $("mask-canvas"), sketchCanvas = $("sketch-canvas");
  // undo snapshots: at most 30, and at most ~256 MB of pixels (a 4K picture keeps 7)
  const undoLimit = (c) => Math.max(2, Math.min(30, Math.floor(256e6 / (c.width * c.height * 4))));
  const st = {
    kind: "mask", tool: "brush", size: 24, color: "#ff3b30", loaded: null, undo: [],
    drawing: null, // {id, layer, x, y}
  };
  const layer = () => (st.kind === "sketch" ? sketchCanvas : maskCanvas);
  const ctx2d = (c) => c.getContext("2d", { willReadFrequently: true });

  function loadImage(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(window.Sumi.t("err_not_image")));
      img.src = src;
    });
  }

  // Shows the picture `dataUrl`; the layers are cleared to its size.
  async function load(dataUrl, name) {
    const img = await loadImage(dataUrl);
    const w = img.naturalWidth, h = img.naturalHeight;
    for (const c of [imageCanvas, maskCanvas, sketchCanvas]) { c.width = w; c.height = h; }
    ctx2d(imageCanvas).drawImage(img, 0, 0);
    st.loaded = { dataUrl, width: w, height: h, name };
    st.undo = [];
    $("inpaint-editor-wrap").hidden = false;
    $("inpaint-meta").textContent = name + " · " + w + "×" + h;
    $("inpaint-drop").dataset.loaded = "true";
    return st.loaded;
  }
  function remove() {
    st.loaded = null;
    st.undo = [];
    $("inpaint-editor-wrap").hidden = true;
    $("inpaint-meta").textContent = "";
    delete $("inpaint-drop").dataset.loaded;
  }

  function snapshot(c) {
    st.undo.push({ c, data: ctx2d(c).getImageData(0, 0, c.width, c.height) });
    while (st.undo.length > undoLimit(c)) st.undo.shift();
  }
  function undo() {
    const u = st.undo.pop();
    if (u) ctx2d(u.c).putImageData(u.data, 0, 0);
  }
  function clear() {
    const c = layer();
    snapshot(c);
    ctx2d(c).clearRect(0, 0, c.width, c.height);
  }
  function invert() {
    if (st.kind === "sketch") return;
    snapshot(maskCanvas);
    const cx = ctx2d(maskCanvas);
    const d = cx.getImageData(0, 0, maskCanvas.width, maskCanvas.height);
    for (let i = 0; i < d.data.length; i += 4) {
      d.data[i] = d.data[i + 1] = d.data[i + 2] = 255;
      d.data[i + 3] = 255 - d.data[i + 3];
    }
    cx.putImageData(d, 0, 0);
  }
  // An uploaded mask, as A1111's create_binary_mask reads it: the alpha channel where the
  // image has transparency, else its luminance; resized to the picture.
  async function uploadMask(dataUrl) {
    if (!st.loaded) return;
    const img = await loadImage(dataUrl);
    const tmp = document.createElement("canvas");
    tmp.width = maskCanvas.width; tmp.height = maskCanvas.height;
    const tc = ctx2d(tmp);
    tc.drawImage(img, 0, 0, tmp.width, tmp.height);
    const src = tc.getImageData(0, 0, tmp.width, tmp.height).data;
    let transparent = false;
    for (let i = 3; i < src.length; i += 4) if (src[i] !== 255) { transparent = true; break; }
    snapshot(maskCanvas);
    const cx = ctx2d(maskCanvas);
    const out = cx.createImageData(tmp.width, tmp.height);
    for (let i = 0; i < src.length; i += 4) {
      const v = transparent ? src[i + 3] : Math.round(0.299 * src[i] + 0.587 * src[i + 1] + 0.114 * src[i + 2]);
      out.data[i] = out.data[i + 1] = out.data[i + 2] = 255;
      out.data[i + 3] = v;
    }
    cx.putImageData(out, 0, 0);
  }

  // ---------- painting ----------
  function pos(c, e) {
    const r = c.getBoundingClientRect();
    return { x: (e.clientX - r.left) * c.width / r.width, y: (e.clientY - r.top) * c.height / r.height };
  }
  // Paints from `from` to `to` (picture pixels); the brush size is in screen pixels, as seen.
  function paint(c, from, to) {
    const cx = ctx2d(c);
    const r = c.getBoundingClientRect();
    const width = st.size * (r.width > 0 ? c.width / r.width : 1);
    cx.save();
    cx.globalCompositeOperation = st.tool === "eraser" ? "destination-out" : "source-over";
    cx.strokeStyle = cx.fillStyle = c === sketchCanvas ? st.color : "#ffffff";
    cx.lineWidth = width;
    cx.lineCap = "round";
    cx.lineJoin = "round";
    cx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      cx.arc(to.x, to.y, width / 2, 0, Math.PI * 2);
      cx.fill();
    } else {
      cx.moveTo(from.x, from.y);
      cx.lineTo(to.x, to.y);
      cx.stroke();
    }
    cx.restore();
  }
  for (const c of [maskCanvas, sketchCanvas]) {
    c.addEventListener("pointerdown", (e) => {
      if (!st.loaded || st.drawing || (e.pointerType === "mouse" && e.button !== 0)) return;
      e.preventDefault();
      try { c.setPointerCapture(e.pointerId); } catch (_) { /* synthetic pointer */ }
      snapshot(c);
      const p = pos(c, e);
      st.drawing = { id: e.pointerId, c, last: p };
      c.dataset.strokes = String(Number(c.dataset.strokes || 0) + 1);
      c.dataset.lastPointer = e.pointerType;
      paint(c, p, p);
    });
    c.addEventListener("pointermove", (e) => {
      const d = st.drawing;
      if (!d || d.id !== e.pointerId) return;
      e.preventDefault();
      const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
      for (const ev of events.length ? events : [e]) {
        const p = pos(c, ev);
        paint(c, d.last, p);
        d.last = p;
      }
    });
    const end = (e) => {
      if (st.drawing && st.drawing.id === e.pointerId) st.drawing = null;
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
  }

  function setKind(kind) {
    st.kind = kind === "sketch" ? "sketch" : "mask";
    const sketch = st.kind === "sketch";
    sketchCanvas.hidden = !sketch;
    maskCanvas.hidden = sketch;
    document.querySelectorAll("[data-sketch-only]").forEach((n) => { n.hidden = !sketch; });
    $("mask-invert").disabled = sketch;
    $("mask-drop").hidden = sketch;
    document.querySelectorAll(".inpaint-kind").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.kind === st.kind)));
  }
  function setTool(tool) {
    st.tool = tool;
    $("tool-brush").setAttribute("aria-pressed", String(tool === "brush"));
    $("tool-eraser").setAttribute("aria-pressed", String(tool === "eraser"));
  }
  $("tool-brush").addEventListener("click", () => setTool("brush"));
  $("tool-eraser").addEventListener("click", () => setTool("eraser"));
  $("brush-size").addEventListener("input", (e) => { st.size = Number(e.target.value); $("brush-size-value").textContent = e.target.value; });
  $("brush-color").addEventListener("input", (e) => { st.color = e.target.value; });
  $("mask-undo").addEventListener("click", undo);
  $("mask-clear").addEventListener("click", clear);
  $("mask-invert").addEventListener("click", invert);
  document.querySelectorAll(".inpaint-kind").forEach((b) => b.addEventListener("click", () => setKind(b.dataset.kind)));

  // ---------- what is sent ----------
  function toPng(c) {
    const u = c.toDataURL("image/png");
    return u.slice(u.indexOf(",") + 1);
  }
  function blurred(src, radius) {
    const c = document.createElement("canvas");
    c.width = src.width; c.height = src.height;
    const cx = ctx2d(c);
    if (radius > 0) cx.filter = "blur(" + radius + "px)";
    cx.drawImage(src, 0, 0);
    return c;
  }
  // The mask as an opaque black and white PNG (white: repaint), or null when nothing is painted.
  function maskPng() {
    const d = ctx2d(maskCanvas).getImageData(0, 0, maskCanvas.width, maskCanvas.height).data;
    let any = false;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) { any = true; break; }
    if (!any) return null;
    const c = document.createElement("canvas");
    c.width = maskCanvas.width; c.height = maskCanvas.height;
    const cx = ctx2d(c);
    cx.fillStyle = "#000";
    cx.fillRect(0, 0, c.width, c.height);
    cx.drawImage(maskCanvas, 0, 0);
    return toPng(c);
  }
  // A1111's inpaint sketch (img2img.py, mode 3): the mask is where the painted picture differs
  // from the original, darkened by the mask transparency; the picture sent is the painted one
  // blurred by the mask blur, composited over the original through the blurred mask.
  function sketchRequest(maskBlur, maskAlpha) {
    const w = imageCanvas.width, h = imageCanvas.height;
    const painted = document.createElement("canvas");
    painted.width = w; painted.height = h;
    const pc = ctx2d(painted);
    pc.drawImage(imageCanvas, 0, 0);
    pc.drawImage(sketchCanvas, 0, 0);
    const orig = ctx2d(imageCanvas).getImageData(0, 0, w, h).data;
    const pd = pc.getImageData(0, 0, w, h).data;
    const maskC = document.createElement("canvas");
    maskC.width = w; maskC.height = h;
    const mc = ctx2d(maskC);
    const md = mc.createImageData(w, h);
    const level = Math.round(255 * (1 - Math.min(100, Math.max(0, maskAlpha)) / 100));
    let any = false;
    for (let i = 0; i < pd.length; i += 4) {
      const diff = pd[i] !== orig[i] || pd[i + 1] !== orig[i + 1] || pd[i + 2] !== orig[i + 2];
      const v = diff ? level : 0;
      if (diff) any = true;
      md.data[i] = md.data[i + 1] = md.data[i + 2] = v;
      md.data[i + 3] = 255;
    }
    if (!any) return null;
    mc.putImageData(md, 0, 0);
    const bm = ctx2d(blurred(maskC, maskBlur)).getImageData(0, 0, w, h).data;
    const bp = ctx2d(blurred(painted, maskBlur)).getImageData(0, 0, w, h).data;
    const out = pc.createImageData(w, h);
    for (let i = 0; i < pd.length; i += 4) {
      const a = bm[i] / 255;
      for (let k = 0; k < 3; k++) out.data[i + k] = Math.round(bp[i + k] * a + orig[i + k] * (1 - a));
      out.data[i + 3] = 255;
    }
    const outC = document.createElement("canvas");
    outC.width = w; outC.height = h;
    ctx2d(outC).putImageData(out, 0, 0);
    return { init: toPng(outC), mask: toPng(maskC) };
  }
  // {init, mask} (base64 PNGs) for the img2img request; throws a readable error.
  function request(maskBlur, maskAlpha) {
    const t = window.Sumi.t;
    if (!st.loaded) throw new Error(t("err_no_inpaint"));
    if (st.kind === "sketch") {
      const r = sketchRequest(maskBlur, maskAlpha);
      if (!r) throw new Error(t("err_no_sketch"));
      return r;
    }
    const mask = maskPng();
    if (!mask) throw new Error(t("err_no_mask"));
    const u = st.loaded.dataUrl;
    return { init: u.slice(u.indexOf(",") + 1), mask };
  }

  Object.assign(window.Sumi, {
    editor: { load, remove, request, uploadMask, setKind, loaded: () => st.loaded, kind: () => st.kind },
  });
})();
