// The page's one dictionary: every label, tooltip, placeholder, status and error the page
// writes, in English and Simplified Chinese (A1111's zh_CN terms where it has them).
// HTML names keys with data-i18n (text), data-i18n-title, -placeholder, -aria, -alt, -empty;
// scripts call Sumi.t(key, {var: value}). Content marked translate="no" (model, sampler,
// network names, infotexts) is never translated.
"use strict";
window.Sumi = window.Sumi || {};
(() => {
  const en = {
    language: "Language", checkpoint: "Checkpoint", mode: "Mode",
    tab_txt2img: "txt2img", tab_img2img: "img2img", tab_inpaint: "Inpaint", tab_extras: "Extras", tab_history: "History",
    input_image: "Input image", drop_image: "Drop an image here, paste one, or click to choose",
    drop_replace: "Drop another image to replace it", remove_image: "Remove image",
    inpaint_kind: "Inpaint kind", inpaint_kind_mask: "Inpaint", inpaint_kind_sketch: "Inpaint sketch",
    brush: "Brush", brush_tip: "Paint the mask (or colour, in inpaint sketch)", eraser: "Eraser", eraser_tip: "Erase what was painted",
    brush_size: "Brush size", brush_color: "Brush colour", undo: "Undo", undo_tip: "Undo the last stroke",
    clear: "Clear", clear_tip: "Clear the mask", invert: "Invert", invert_tip: "Invert the mask", upload_mask: "Upload a mask",
    prompt: "Prompt", prompt_placeholder: "Prompt (Ctrl+Enter to generate, Ctrl+↑/↓ to change a weight)",
    negative_prompt: "Negative prompt",
    extra_networks: "Extra networks", lora: "LoRA", embeddings: "Textual inversion", hypernetworks: "Hypernetworks",
    search: "Search", refresh: "Refresh", refresh_tip: "Read the folders again", no_networks: "Nothing in this folder.",
    networks_hint: "A click adds the network to the prompt (a second click removes it); Ctrl+↑/↓ in the prompt changes its weight.",
    settings: "Settings", sampler: "Sampling method", scheduler: "Schedule type", steps: "Sampling steps", cfg: "CFG scale",
    resize_mode: "Resize mode", resize_0: "Just resize", resize_1: "Crop and resize", resize_2: "Resize and fill",
    resize_3: "Just resize (latent upscale)", width: "Width", height: "Height", swap_size: "Swap width and height",
    lock_ratio: "Lock ratio", lock_ratio_tip: "Keep the aspect ratio (of the input image when there is one)",
    batch_count: "Batch count", batch_size: "Batch size", denoising: "Denoising strength", seed: "Seed",
    seed_random: "Random seed (-1)", seed_reuse: "Reuse the seed of the last result", seed_hint: "-1 picks a random seed.",
    inpaint_settings: "Inpaint settings", mask_blur: "Mask blur", mask_alpha: "Mask transparency", mask_mode: "Mask mode",
    mask_mode_0: "Inpaint masked", mask_mode_1: "Inpaint not masked", masked_content: "Masked content",
    fill_0: "fill", fill_1: "original", fill_2: "latent noise", fill_3: "latent nothing", inpaint_area: "Inpaint area",
    area_0: "Whole picture", area_1: "Only masked", padding: "Only masked padding, pixels",
    mask_weight: "Conditioning mask strength", mask_weight_tip: "Inpainting conditioning mask strength (for inpainting models)",
    hires: "Hires. fix", upscaler: "Upscaler", hr_steps: "Hires steps", hr_scale: "Upscale by",
    hr_resize_x: "Resize width to", hr_resize_y: "Resize height to",
    png_info: "PNG info", png_info_drop: "Drop a PNG, JPEG or WebP to reuse its settings", parameters: "Parameters",
    output: "Output", save_images: "Save on the server",
    save_images_tip: "Also keep the pictures in the server's outputs folder (sumi serve --outdir), as A1111 saves them", generate: "Generate", generating: "Generating…", generate_tip: "Ctrl+Enter", interrupt: "Interrupt",
    interrupt_tip: "Esc", skip: "Skip", dismiss: "Dismiss error", progress: "Generation progress", live_preview: "Live preview",
    results_empty: "Results appear here.", upscaler_1: "Upscaler 1", upscaling_resize: "Resize", upscale: "Upscale",
    upscaling: "Upscaling…", history_clear: "Clear history", history_empty: "Nothing generated yet.",
    history_count: "{n} pictures kept in this browser", download: "Download", use_settings: "Reuse parameters",
    send_img2img: "Send to img2img", send_inpaint: "Send to inpaint", delete: "Delete",
    result_n: "Result {n}", seed_n: "seed {seed}", result_seed: "Result {n}, seed {seed}", no_infotext: "(no infotext)",
    size: "Size",
    starting: "Starting…", waiting: "Waiting…", job_n: "Job {n}/{total}", step_n: "Step {n}/{total}", eta: "ETA {s} s",
    done_n: "Done · {n} image(s) in {s} s", interrupted_n: "Interrupted · {n} image(s) in {s} s", failed: "Failed",
    reading: "Reading {name}…", filled: "Filled {list}", filled_from: "Filled {list} from result {n}",
    not_available: "Not available here: {list}", nothing: "nothing",
    err_no_params: "No generation parameters found in {name}.", err_png_info: "PNG info failed: {msg}",
    err_load: "Could not load everything from the server:\n{list}", err_switch: "Switching the checkpoint failed: {msg}",
    err_unreachable: "Could not reach the server ({what}): {msg}", err_not_json: "The server sent something that is not JSON for {path}",
    err_busy: "429 Server busy: the queue is full", err_retry: " (retry in {s} s)", err_too_large: "413 Request too large",
    err_auth: "401 Not authorized", err_number: "{name} must be a number", err_min: "{name} must be at least {min}",
    err_max: "{name} must be at most {max}", err_no_init: "Drop an input image first (or switch to txt2img).",
    err_no_inpaint: "Drop a picture to inpaint first.", err_no_mask: "Paint a mask first (or upload one).",
    err_no_sketch: "Paint on the picture first.", err_no_images: "The server returned no images.",
    err_interrupt: "Interrupt failed: {msg}", err_skip: "Skip failed: {msg}", err_not_image: "That file is not an image the browser can read",
    err_read: "Could not read {name}", err_extras_no_image: "Drop a picture to upscale first.",
    err_history: "The history could not be stored: {msg}", err_networks: "Could not list the networks: {msg}",
    pasted_image: "pasted image", image: "image",
  };
  const zh = {
    language: "语言", checkpoint: "模型", mode: "模式",
    tab_txt2img: "文生图", tab_img2img: "图生图", tab_inpaint: "局部重绘", tab_extras: "后期处理", tab_history: "历史记录",
    input_image: "输入图像", drop_image: "拖放图像到此处、粘贴或点击选择", drop_replace: "拖放另一张图像以替换",
    remove_image: "移除图像", inpaint_kind: "重绘方式", inpaint_kind_mask: "局部重绘", inpaint_kind_sketch: "涂鸦重绘",
    brush: "画笔", brush_tip: "绘制蒙版（涂鸦重绘时绘制颜色）", eraser: "橡皮擦", eraser_tip: "擦除已绘制的部分",
    brush_size: "画笔大小", brush_color: "画笔颜色", undo: "撤销", undo_tip: "撤销上一笔", clear: "清除", clear_tip: "清除蒙版",
    invert: "反转", invert_tip: "反转蒙版", upload_mask: "上传蒙版",
    prompt: "提示词", prompt_placeholder: "提示词（Ctrl+Enter 生成，Ctrl+↑/↓ 调整权重）", negative_prompt: "反向提示词",
    extra_networks: "扩展模型", lora: "LoRA", embeddings: "嵌入式", hypernetworks: "超网络",
    search: "搜索", refresh: "刷新", refresh_tip: "重新读取文件夹", no_networks: "此文件夹中没有内容。",
    networks_hint: "点击将其加入提示词（再次点击移除）；在提示词中按 Ctrl+↑/↓ 调整权重。",
    settings: "设置", sampler: "采样方法", scheduler: "调度类型", steps: "迭代步数", cfg: "提示词引导系数 (CFG)",
    resize_mode: "缩放模式", resize_0: "仅调整大小", resize_1: "裁剪后缩放", resize_2: "缩放后填充空白",
    resize_3: "调整大小（潜空间放大）", width: "宽度", height: "高度", swap_size: "交换宽度和高度",
    lock_ratio: "锁定比例", lock_ratio_tip: "保持宽高比（有输入图像时按其比例）",
    batch_count: "总批次数", batch_size: "单批数量", denoising: "重绘幅度", seed: "随机数种子",
    seed_random: "随机种子 (-1)", seed_reuse: "使用上一张结果的种子", seed_hint: "-1 表示随机种子。",
    inpaint_settings: "局部重绘设置", mask_blur: "蒙版模糊", mask_alpha: "蒙版透明度", mask_mode: "蒙版模式",
    mask_mode_0: "重绘蒙版内容", mask_mode_1: "重绘非蒙版内容", masked_content: "蒙版区域内容处理",
    fill_0: "填充", fill_1: "原图", fill_2: "潜空间噪声", fill_3: "空白潜空间", inpaint_area: "重绘区域",
    area_0: "整张图片", area_1: "仅蒙版区域", padding: "仅蒙版区域下边缘预留像素",
    mask_weight: "图像调节蒙版强度", mask_weight_tip: "局部重绘时图像调节蒙版强度（用于局部重绘模型）",
    hires: "高分辨率修复", upscaler: "放大算法", hr_steps: "高分迭代步数", hr_scale: "放大倍数",
    hr_resize_x: "将宽度调整为", hr_resize_y: "将高度调整为",
    png_info: "图片信息", png_info_drop: "拖放图片以使用其生成参数", parameters: "参数",
    output: "输出", save_images: "保存到服务器",
    save_images_tip: "同时将图像保存到服务器的输出文件夹（与 A1111 一样）", generate: "生成", generating: "生成中…", generate_tip: "Ctrl+Enter", interrupt: "中止",
    interrupt_tip: "Esc", skip: "跳过", dismiss: "关闭错误", progress: "生成进度", live_preview: "实时预览",
    results_empty: "结果将显示在这里。", upscaler_1: "放大算法 1", upscaling_resize: "缩放比例", upscale: "放大",
    upscaling: "放大中…", history_clear: "清空历史记录", history_empty: "还没有生成任何图像。",
    history_count: "此浏览器中保存了 {n} 张图像", download: "下载", use_settings: "使用这些参数",
    send_img2img: "发送到图生图", send_inpaint: "发送到局部重绘", delete: "删除",
    result_n: "结果 {n}", seed_n: "种子 {seed}", result_seed: "结果 {n}，种子 {seed}", no_infotext: "（无生成信息）",
    size: "尺寸",
    starting: "开始…", waiting: "等待中…", job_n: "任务 {n}/{total}", step_n: "第 {n}/{total} 步", eta: "预计剩余 {s} 秒",
    done_n: "完成 · {n} 张图像，用时 {s} 秒", interrupted_n: "已中止 · {n} 张图像，用时 {s} 秒", failed: "失败",
    reading: "正在读取 {name}…", filled: "已填入：{list}", filled_from: "已从结果 {n} 填入：{list}",
    not_available: "此处不可用：{list}", nothing: "无",
    err_no_params: "{name} 中没有生成参数。", err_png_info: "读取图片信息失败：{msg}",
    err_load: "无法从服务器加载全部内容：\n{list}", err_switch: "切换模型失败：{msg}",
    err_unreachable: "无法连接服务器（{what}）：{msg}", err_not_json: "服务器对 {path} 的回答不是 JSON",
    err_busy: "429 服务器繁忙：队列已满", err_retry: "（{s} 秒后重试）", err_too_large: "413 请求过大",
    err_auth: "401 未授权", err_number: "{name} 必须是数字", err_min: "{name} 不能小于 {min}",
    err_max: "{name} 不能大于 {max}", err_no_init: "请先拖入输入图像（或切换到文生图）。",
    err_no_inpaint: "请先拖入要重绘的图像。", err_no_mask: "请先绘制蒙版（或上传蒙版）。",
    err_no_sketch: "请先在图像上涂鸦。", err_no_images: "服务器没有返回图像。",
    err_interrupt: "中止失败：{msg}", err_skip: "跳过失败：{msg}", err_not_image: "浏览器无法读取该图像文件",
    err_read: "无法读取 {name}", err_extras_no_image: "请先拖入要放大的图像。",
    err_history: "无法保存历史记录：{msg}", err_networks: "无法列出模型：{msg}",
    pasted_image: "粘贴的图像", image: "图像",
  };
  const dicts = { en, "zh-CN": zh };
  const KEY = "sumi.lang";

  function initial() {
    try {
      const kept = localStorage.getItem(KEY);
      if (kept && dicts[kept]) return kept;
    } catch (_) { /* storage may be off */ }
    // the browser's first language: any Chinese gets the Simplified Chinese page
    const first = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
    return /^zh\b/i.test(String(first)) ? "zh-CN" : "en";
  }
  let lang = initial();

  // The text of `key` in the current language (English where the key is missing), with
  // {name} replaced from `vars`.
  function t(key, vars) {
    let s = dicts[lang][key];
    if (s === undefined) s = en[key];
    if (s === undefined) s = key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] !== undefined ? String(vars[k]) : m));
    return s;
  }

  const ATTRS = [["title", "title"], ["placeholder", "placeholder"], ["aria", "aria-label"], ["alt", "alt"], ["empty", "data-empty"]];
  // The {name} values an element keeps for its keys (data-i18n-vars, JSON).
  function varsOf(n) {
    try { return n.dataset.i18nVars ? JSON.parse(n.dataset.i18nVars) : undefined; } catch (_) { return undefined; }
  }
  // Writes every data-i18n* key under `root` in the current language.
  function apply(root) {
    const r = root || document;
    r.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n, varsOf(n)); });
    for (const [k, attr] of ATTRS) {
      const ds = "i18n" + k[0].toUpperCase() + k.slice(1);
      r.querySelectorAll("[data-i18n-" + k + "]").forEach((n) => n.setAttribute(attr, t(n.dataset[ds], varsOf(n))));
    }
    document.documentElement.lang = lang;
  }
  // Gives `node` the text of `key` (kept, so that a language switch rewrites it); `attr` names
  // an attribute of ATTRS ("alt", "title", …) instead of the text. No key: plain text, not kept.
  function setText(node, key, vars, attr) {
    if (vars) node.dataset.i18nVars = JSON.stringify(vars);
    else delete node.dataset.i18nVars;
    if (attr) {
      const [k, name] = ATTRS.find(([a]) => a === attr);
      node.dataset["i18n" + k[0].toUpperCase() + k.slice(1)] = key;
      node.setAttribute(name, t(key, vars));
    } else {
      node.dataset.i18n = key;
      node.textContent = t(key, vars);
    }
  }
  const listeners = [];
  function setLang(l) {
    if (!dicts[l]) return;
    lang = l;
    try { localStorage.setItem(KEY, l); } catch (_) { /* not kept */ }
    apply(document);
    listeners.forEach((f) => f(l));
  }
  Object.assign(window.Sumi, {
    t, apply, setLang, setText, lang: () => lang, onLang: (f) => listeners.push(f), dictionaries: dicts,
  });
})();
