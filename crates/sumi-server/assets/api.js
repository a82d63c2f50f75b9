// The page's door to the server: API calls that turn every failure into a readable Error
// (status, the API's `detail`), and the API's field errors put next to the inputs they name.
"use strict";
window.Sumi = window.Sumi || {};
(() => {
  const API = "/sdapi/v1";
  const $ = (id) => document.getElementById(id);
  const t = (k, v) => window.Sumi.t(k, v);

  // The request fields the API names in a 422 `detail` ("steps: ...") and their inputs.
  const FIELD_INPUTS = {
    prompt: "prompt", negative_prompt: "negative-prompt", seed: "seed", sampler_name: "sampler",
    scheduler: "scheduler", steps: "steps", cfg_scale: "cfg", width: "width", height: "height",
    n_iter: "batch-count", batch_size: "batch-size", denoising_strength: "strength-value", resize_mode: "resize-mode",
    init_images: "init-image", mask: "editor", mask_blur: "mask-blur", inpainting_fill: "inpaint-settings",
    inpaint_full_res_padding: "inpaint-padding", inpainting_mask_invert: "inpaint-settings",
    inpainting_mask_weight: "mask-weight", enable_hr: "enable-hr", hr_scale: "hr-scale", hr_upscaler: "hr-upscaler",
    hr_second_pass_steps: "hr-steps", hr_resize_x: "hr-resize-x", hr_resize_y: "hr-resize-y",
    sd_model_checkpoint: "model", upscaler_1: "extras-upscaler", upscaling_resize: "extras-resize", image: "extras-drop",
  };
  function clearFieldErrors() {
    document.querySelectorAll(".field-error[data-for]").forEach((n) => n.remove());
    document.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid"));
  }
  // Puts each line of `message` that names a known field ("name: text", "name.0: text") next
  // to that field's input; returns how many were placed.
  function showFieldErrors(message) {
    let placed = 0;
    for (const line of String(message).split("\n")) {
      const m = /^\s*(?:body\.)?([a-z_0-9]+)(?:[.[][^:]*)?:\s*(.+)$/i.exec(line);
      const id = m && FIELD_INPUTS[m[1]];
      const input = id && $(id);
      if (!input) continue;
      const box = document.createElement("div");
      box.className = "field-error";
      box.dataset.for = m[1];
      box.setAttribute("role", "alert");
      box.setAttribute("translate", "no");
      box.textContent = line.trim();
      input.classList.add("invalid");
      (input.closest(".field") || input).after(box);
      placed++;
    }
    return placed;
  }

  function describeDetail(detail) {
    if (detail == null) return "";
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        if (d && typeof d === "object") {
          const loc = Array.isArray(d.loc) ? d.loc.join(".") : d.loc;
          return (loc ? loc + ": " : "") + (d.msg || JSON.stringify(d));
        }
        return String(d);
      }).join("\n");
    }
    return JSON.stringify(detail);
  }

  // Calls the API; resolves with the parsed JSON body, rejects with a readable Error.
  async function api(method, path, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, opts);
    } catch (e) {
      throw new Error(t("err_unreachable", { what: method + " " + path, msg: e.message }));
    }
    const text = await res.text();
    // `null` is JSON too (A1111's answer to POST /options): only text that does not parse is refused
    let data = null, parsed = !text;
    if (text) {
      try { data = JSON.parse(text); parsed = true; } catch (_) { data = null; }
    }
    if (!res.ok) {
      let msg = "", detail = "";
      if (data && typeof data === "object") {
        const parts = [];
        if (data.error) parts.push(String(data.error));
        const d = describeDetail(data.detail);
        detail = d;
        if (d && d !== data.error) parts.push(d);
        if (!parts.length && data.errors) parts.push(describeDetail(data.errors));
        msg = parts.join(": ");
      }
      if (!msg) msg = text.trim().slice(0, 500) || res.statusText;
      let head = res.status + " " + (res.statusText || "");
      if (res.status === 429) {
        const retry = res.headers.get("Retry-After");
        head = t("err_busy") + (retry ? t("err_retry", { s: retry }) : "");
      } else if (res.status === 413) {
        head = t("err_too_large");
      } else if (res.status === 401) {
        head = t("err_auth");
      }
      const err = new Error(head.trim() + (msg ? "\n" + msg : ""));
      err.status = res.status;
      err.detail = detail;
      throw err;
    }
    if (!parsed) throw new Error(t("err_not_json", { path }));
    return data;
  }

  Object.assign(window.Sumi, { api, fieldErrors: { show: showFieldErrors, clear: clearFieldErrors } });
})();
