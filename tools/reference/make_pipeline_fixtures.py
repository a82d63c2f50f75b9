"""Reference data for sumi-pipeline's image stage (issue 5), from Pillow as A1111 v1.10.1 uses it.

    python -m venv /tmp/pil95 && /tmp/pil95/bin/pip install pillow==9.5.0 numpy
    /tmp/pil95/bin/python tools/reference/make_pipeline_fixtures.py fixtures/pipeline [../shared/data/images]

Pillow must be 9.5.0, the version A1111 v1.10.1 pins (requirements_versions.txt): newer Pillow
(13.0 in tools/reference/.venv) runs the vertical Lanczos pass first for some sizes, which changes
pixels by up to ~40 levels; 9.5.0 always runs the horizontal pass first.

Writes into the output folder:
  synth_rgb.png, synth_rgba.png, synth_la.png, synth_exif6.png, synth_lossless.webp, synth.jpg
                      small synthetic inputs (deterministic)
  image_cases.json    one entry per case: input, operation, arguments, sha256 of Pillow's RGB bytes
                      (and, for synthetic inputs, the name of a PNG holding the expected pixels)
  expected/*.png      the expected pixels of the synthetic cases
  infotext/*.txt      infotexts as A1111 v1.10.1's create_infotext joins them (see INFOTEXT_CASES)
  png/*.png           3x2 PNGs saved by Pillow with A1111's PngInfo().add_text("parameters", text)
                      (tEXt or iTXt), and with zip=True (zTXt, compressed iTXt); png/texts.json
  unit_f32.txt        A1111's float conversion of every byte value: the float32 bits of
                      (np.float32(v) / 255.0) and of (that * 2 - 1) in float32 (as torch does)

The operations mirror A1111 v1.10.1 `modules/images.py` (`resize_image`, `flatten`, `fix_image`)
with `opts.upscaler_for_img2img` "None" and `opts.img2img_background_color` "#ffffff".
"""

import hashlib
import json
import os
import sys

import numpy as np
import PIL
from PIL import Image, ImageOps, PngImagePlugin

LANCZOS = Image.Resampling.LANCZOS


# --- A1111 v1.10.1 modules/images.py, the parts the image stage uses (no upscaler configured) ---

def resize_image(resize_mode, im, width, height):
    if im.mode == "RGBA":
        im = im.convert("RGB")

    def resize(im, w, h):
        return im.resize((w, h), resample=LANCZOS)

    if resize_mode == 0:
        res = resize(im, width, height)
    elif resize_mode == 1:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    else:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        if ratio < src_ratio:
            fill_height = height // 2 - src_h // 2
            if fill_height > 0:
                res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
                res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)), box=(0, fill_height + src_h))
        elif ratio > src_ratio:
            fill_width = width // 2 - src_w // 2
            if fill_width > 0:
                res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
                res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)), box=(fill_width + src_w, 0))
    return res


def flatten(img, bgcolor):
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def fix_image(image):
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGB", "P") and isinstance(image.info.get("transparency"), bytes):
        image = image.convert("RGBA")
    return image


def load_like_ui(path):
    """The web UI's path: open, fix_image, gradio's image_mode="RGBA", then flatten onto white."""
    im = fix_image(Image.open(path))
    im = im.convert("RGBA")
    return flatten(im, "#ffffff")


# --- synthetic inputs ---

def synth_rgb(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.zeros((h, w, 3), np.float64)
    a[..., 0] = 255 * (x / max(w - 1, 1))
    a[..., 1] = 255 * (y / max(h - 1, 1))
    a[..., 2] = np.where((x // 3 + y // 2) % 2 == 0, 250, 5)  # hard edges: Lanczos overshoot clips
    a += rng.normal(0, 20, a.shape)
    a[h // 2, :, :] = 255
    a[:, w // 3, :] = 0
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def write_raw_png(path, w, h, color_type, bit_depth, raw, extra_chunks=()):
    """A PNG written by hand (Pillow cannot write 16-bit RGB): filter 0 on every row."""
    import struct, zlib

    def chunk(ty, data):
        return struct.pack(">I", len(data)) + ty + data + struct.pack(">I", zlib.crc32(ty + data) & 0xFFFFFFFF)

    row = len(raw) // h
    body = b"".join(b"\0" + raw[y * row:(y + 1) * row] for y in range(h))
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)))
        for ty, data in extra_chunks:
            fh.write(chunk(ty, data))
        fh.write(chunk(b"IDAT", zlib.compress(body)))
        fh.write(chunk(b"IEND", b""))


def sha(im):
    assert im.mode == "RGB"
    return hashlib.sha256(im.tobytes()).hexdigest()


# --- A1111 v1.10.1 create_infotext's last lines and infotext_utils.quote ---

def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def create_infotext_text(prompt_text, negative_prompt, generation_params):
    generation_params_text = ", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in generation_params.items() if v is not None])
    negative_prompt_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative_prompt_text}\n{generation_params_text}".strip()


def gp(**kw):
    """generation_params in create_infotext's order (keys given with _ for space); absent = None."""
    order = ["Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed", "Face restoration", "Size",
             "Model hash", "Model", "FP8 weight", "Cache FP16 weight for LoRA", "VAE hash", "VAE", "Variation seed",
             "Variation seed strength", "Seed resize from", "Denoising strength", "Conditional mask weight", "Clip skip",
             "ENSD", "Token merging ratio", "Token merging ratio hr", "Init image hash", "RNG", "Tiling"]
    extra = kw.pop("extra", {})
    version = kw.pop("Version", None)
    named = {k.replace("_", " "): v for k, v in kw.items()}
    assert set(named) <= set(order), set(named) - set(order)
    d = {k: named.get(k) for k in order}
    d.update(extra)  # **p.extra_generation_params: known keys keep their slot
    d["Version"] = version
    d["User"] = None
    return d


V = "v1.10.1"
INFOTEXT_CASES = [
    ("01_txt2img_basic", "a photo of a cat", "blurry, lowres",
     gp(Steps=20, Sampler="DPM++ 2M", Schedule_type="Karras", CFG_scale=7, Seed=1234, Size="512x512",
        Model_hash="6ce0161689", Model="v1-5-pruned-emaonly", Version=V)),
    ("02_img2img_cpu_rng", "anime girl, masterpiece", "",
     gp(Steps=30, Sampler="Euler a", Schedule_type="Automatic", CFG_scale=7.5, Seed=42, Size="512x768",
        Model_hash="0123456789", Model="anything-v5", Denoising_strength=0.7, RNG="CPU", Version=V)),
    ("03_clip_skip_nv", "landscape", "people",
     gp(Steps=25, Sampler="DPM++ SDE", Schedule_type="Karras", CFG_scale=6, Seed=3000000000, Size="768x512",
        Model="sd2", Clip_skip=2, RNG="NV")),
    ("04_variation_seed", "a castle", "",
     gp(Steps=20, Sampler="Euler", Schedule_type="Automatic", CFG_scale=7, Seed=100, Size="512x512",
        Model_hash="abcdef0123", Model="model", Variation_seed=77, Variation_seed_strength=0.3,
        Seed_resize_from="640x384", Version=V)),
    ("05_quoted_model_vae", "portrait", "bad hands",
     gp(Steps=20, Sampler="DPM++ 2M", Schedule_type="Karras", CFG_scale=7, Seed=5, Size="512x512",
        Model_hash="1111111111", Model="my, model:v2", VAE_hash="c6a580b13a",
        VAE="vae-ft-mse-840000-ema-pruned.safetensors", Version=V)),
    ("06_multiline", "line one\nline two, (detail:1.2)", "ugly\nbad anatomy",
     gp(Steps=20, Sampler="DPM++ 2M", Schedule_type="Karras", CFG_scale=7, Seed=9, Size="512x512", Version=V)),
    ("07_empty_prompt", "", "lowres",
     gp(Steps=20, Sampler="Euler a", Schedule_type="Automatic", CFG_scale=7, Seed=1, Size="512x512", Version=V)),
    ("08_api_floats", "x", "",
     gp(Steps=1, Sampler="DPM++ 2M SDE", Schedule_type="Exponential", CFG_scale=7.0, Seed=0, Size="500x333",
        Variation_seed=0, Variation_seed_strength=1e-05, Denoising_strength=1.0)),
    ("09_extra_params", "<lora:x:1>, girl", "",
     gp(Steps=20, Sampler="DPM++ 2M", Schedule_type="Karras", CFG_scale=7, Seed=7, Size="512x512",
        Model_hash="2222222222", Model="m", Version=V,
        extra={"TI hashes": "easynegative: c74b4e810b03, verybad: 1234567890ab", "ENSD": 31337, "Emphasis": "No norm"})),
    ("10_json_escapes", "unicode \u2603 prompt", "",
     gp(Steps=20, Sampler="DPM++ 2M", Schedule_type="Karras", CFG_scale=7, Seed=11, Size="512x512",
        Model='a "quoted", back\\slash\ttab', VAE="\ubaa8\ub378:v1", Version=V, extra={"Note": "esc\x1b, ok"})),
    ("11_strip_and_bare_key", "  hello  ", "",
     gp(Steps=20, Sampler="Euler", Schedule_type="Automatic", CFG_scale=7, Seed=12, Size="512x512", Version=V,
        extra={"Hires fix": "Hires fix"})),
    ("12_extreme_numbers", "big", "",
     gp(Steps=150, Sampler="DPM++ 2M", Schedule_type="Karras", CFG_scale=1e16, Seed=4294967295, Size="2048x64",
        Variation_seed=1, Variation_seed_strength=0.1 + 0.2, Denoising_strength=0.0001, Clip_skip=12)),
]


def main():
    assert PIL.__version__ == "9.5.0", f"A1111 v1.10.1 pins Pillow 9.5.0; this is {PIL.__version__}"
    out = sys.argv[1]
    photos = sys.argv[2] if len(sys.argv) > 2 else None
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)

    rgb = synth_rgb(37, 23, 1)
    rgb.save(os.path.join(out, "synth_rgb.png"))

    rng = np.random.default_rng(2)
    rgba = np.concatenate([np.asarray(synth_rgb(19, 13, 3)), rng.integers(0, 256, (13, 19, 1), dtype=np.uint8)], axis=2)
    rgba[0, :, 3] = 0
    rgba[1, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(os.path.join(out, "synth_rgba.png"))

    la = np.stack([np.asarray(synth_rgb(11, 7, 4))[..., 0], rng.integers(0, 256, (7, 11), dtype=np.uint8)], axis=2)
    Image.fromarray(la, "LA").save(os.path.join(out, "synth_la.png"))

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    synth_rgb(13, 9, 5).save(os.path.join(out, "synth_exif6.png"), exif=exif)

    synth_rgb(17, 11, 6).save(os.path.join(out, "synth_lossless.webp"), lossless=True)
    synth_rgb(17, 11, 6).save(os.path.join(out, "synth_lossy.webp"), quality=80)
    # Other PNG kinds: grey, grey + tRNS, palette + tRNS, RGB + tRNS, 16-bit RGB, RGBA, grey, grey+alpha.
    g = np.asarray(synth_rgb(10, 6, 10))
    Image.fromarray(g[..., 0], "L").save(os.path.join(out, "synth_l.png"))
    Image.fromarray(g[..., 0], "L").save(os.path.join(out, "synth_l_trns.png"), transparency=int(g[0, 0, 0]))
    pal = synth_rgb(10, 6, 11).quantize(16)
    pal.save(os.path.join(out, "synth_p_trns.png"), transparency=bytes(range(0, 256, 16)))
    synth_rgb(10, 6, 12).save(os.path.join(out, "synth_rgb_trns.png"), transparency=tuple(int(v) for v in np.asarray(synth_rgb(10, 6, 12))[2, 3]))
    r16 = np.random.default_rng(13).integers(0, 65536, (6, 10, 4)).astype(">u2")
    write_raw_png(os.path.join(out, "synth_rgb16.png"), 10, 6, 2, 16, r16[..., :3].tobytes())
    write_raw_png(os.path.join(out, "synth_rgba16.png"), 10, 6, 6, 16, r16.tobytes())
    write_raw_png(os.path.join(out, "synth_l16.png"), 10, 6, 0, 16, (r16[..., 0] // 128).astype(">u2").tobytes())
    write_raw_png(os.path.join(out, "synth_la16.png"), 10, 6, 4, 16, r16[..., :2].tobytes())
    synth_rgb(24, 16, 7).save(os.path.join(out, "synth.jpg"), quality=90)  # 4:2:0
    synth_rgb(24, 16, 7).save(os.path.join(out, "synth444.jpg"), quality=90, subsampling=0)

    cases = []

    def add(name, inp, op, args, im):
        case = {"name": name, "input": inp, "op": op, "args": args, "width": im.width, "height": im.height, "sha256": sha(im)}
        if not inp.startswith("shared:"):
            case["expected"] = f"expected/{name}.png"
            im.save(os.path.join(out, case["expected"]))
        cases.append(case)

    # Loading: flattening, grey+alpha, EXIF orientation, lossless WebP, JPEG (decoded by libjpeg-turbo).
    for f in ["synth_rgb.png", "synth_rgba.png", "synth_la.png", "synth_exif6.png", "synth_lossless.webp", "synth.jpg", "synth444.jpg",
              "synth_lossy.webp", "synth_l.png", "synth_l_trns.png", "synth_p_trns.png", "synth_rgb_trns.png",
              "synth_rgb16.png", "synth_rgba16.png", "synth_l16.png", "synth_la16.png"]:
        add("load_" + f.replace(".", "_"), f, "load", {}, load_like_ui(os.path.join(out, f)))

    # Plain Lanczos: up, down, one axis only, odd sizes, extreme ratios.
    for (w, h) in [(64, 48), (20, 11), (37, 60), (90, 23), (7, 5), (1, 1), (111, 3), (5, 77), (36, 23)]:
        add(f"lanczos_synth_{w}x{h}", "synth_rgb.png", "lanczos", {"w": w, "h": h}, rgb.resize((w, h), LANCZOS))
    # Boxes, including the zero-extent boxes of the fill mode and fractional ones.
    for (w, h, box) in [(37, 5, (0, 0, 37, 0)), (37, 4, (0, 23, 37, 23)), (6, 23, (0, 0, 0, 23)), (3, 23, (37, 0, 37, 23)),
                        (30, 20, (2.5, 1.25, 30.75, 22.0)), (10, 10, (3, 4, 13, 14)), (50, 9, (1, 0, 36, 23))]:
        add(f"box_synth_{w}x{h}_{'_'.join(str(v) for v in box)}".replace(".", "p"), "synth_rgb.png", "lanczos_box",
            {"w": w, "h": h, "box": list(map(float, box))}, rgb.resize((w, h), LANCZOS, box=box))
    # The fill bands: A1111 calls resize without a filter there, so Pillow's default, BICUBIC.
    for (w, h, box) in [(37, 5, (0, 0, 37, 0)), (37, 1, (0, 23, 37, 23)), (6, 23, (0, 0, 0, 23)), (2, 23, (37, 0, 37, 23)),
                        (30, 20, (2.5, 1.25, 30.75, 22.0)), (70, 9, (1, 0, 36, 23))]:
        add(f"bicubic_synth_{w}x{h}_{'_'.join(str(v) for v in box)}".replace(".", "p"), "synth_rgb.png", "bicubic_box",
            {"w": w, "h": h, "box": list(map(float, box))}, rgb.resize((w, h), box=box))
    two_rows = synth_rgb(9, 2, 8)
    two_rows.save(os.path.join(out, "synth_2rows.png"))
    add("bicubic_2rows_9x4", "synth_2rows.png", "bicubic_box", {"w": 9, "h": 4, "box": [0.0, 2.0, 9.0, 2.0]},
        two_rows.resize((9, 4), box=(0, 2, 9, 2)))
    add("mode2_2rows_9x8", "synth_2rows.png", "resize_image", {"mode": 2, "w": 9, "h": 8}, resize_image(2, two_rows, 9, 8))
    # A1111 resize modes: wider, taller and equal ratios; fill bands of 0, 1 and more pixels.
    for mode in (0, 1, 2, 3):
        for (w, h) in [(64, 64), (48, 16), (16, 48), (74, 46), (38, 23), (40, 23), (37, 25), (9, 31), (120, 40)]:
            add(f"mode{mode}_synth_{w}x{h}", "synth_rgb.png", "resize_image", {"mode": mode, "w": w, "h": h},
                resize_image(mode, rgb, w, h))

    if photos:
        for f in ["astronaut.png", "coffee.png", "chelsea.png"]:
            im = load_like_ui(os.path.join(photos, f))
            stem = f.split(".")[0]
            add(f"load_{stem}", "shared:" + f, "load", {}, im)
            for (w, h) in [(512, 512), (512, 768), (768, 512), (333, 251), (1001, 999), (64, 64)]:
                add(f"lanczos_{stem}_{w}x{h}", "shared:" + f, "lanczos", {"w": w, "h": h}, im.resize((w, h), LANCZOS))
            for mode in (0, 1, 2):
                for (w, h) in [(512, 512), (512, 768), (768, 512), (504, 336), (451, 301)]:
                    add(f"mode{mode}_{stem}_{w}x{h}", "shared:" + f, "resize_image", {"mode": mode, "w": w, "h": h},
                        resize_image(mode, im, w, h))

    os.makedirs(os.path.join(out, "infotext"), exist_ok=True)
    for name, prompt, negative, params in INFOTEXT_CASES:
        with open(os.path.join(out, "infotext", name + ".txt"), "w", encoding="utf-8", newline="") as fh:
            fh.write(create_infotext_text(prompt, negative, params))

    os.makedirs(os.path.join(out, "png"), exist_ok=True)
    small = synth_rgb(3, 2, 9)
    texts = {
        "latin1": "a caf\u00e9, (tea:1.2)\nNegative prompt: x\nSteps: 20, Sampler: Euler, Seed: 1",
        "utf8": "\u2603 \ubaa8\ub378\nSteps: 20, Sampler: Euler, Seed: 1",
    }
    for name, text in texts.items():
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)  # as images.save_image_with_geninfo
        small.save(os.path.join(out, "png", f"pillow_{name}.png"), pnginfo=info)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", texts["latin1"], zip=True)
    small.save(os.path.join(out, "png", "pillow_ztxt.png"), pnginfo=info)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", texts["utf8"], zip=True)
    small.save(os.path.join(out, "png", "pillow_itxt_zip.png"), pnginfo=info)
    small.save(os.path.join(out, "png", "pillow_none.png"))
    for f in ["pillow_latin1.png", "pillow_utf8.png", "pillow_ztxt.png", "pillow_itxt_zip.png"]:
        assert Image.open(os.path.join(out, "png", f)).info["parameters"] in texts.values()
    with open(os.path.join(out, "png", "texts.json"), "w", encoding="utf-8") as fh:
        json.dump(texts, fh, ensure_ascii=False, indent=1)

    with open(os.path.join(out, "image_cases.json"), "w") as fh:
        json.dump(cases, fh, indent=1)

    unit = np.arange(256, dtype=np.uint8)[None, :].astype(np.float32) / 255.0
    assert unit.dtype == np.float32
    signed = unit * np.float32(2) - np.float32(1)
    with open(os.path.join(out, "unit_f32.txt"), "w") as fh:
        fh.write("# byte unit_f32_bits signed_f32_bits  (np.float32(v) / 255.0; x * 2 - 1 in float32)\n")
        for i in range(256):
            fh.write(f"{i} {unit[0, i].view(np.uint32):08x} {signed[0, i].view(np.uint32):08x}\n")
    print(f"{len(cases)} cases written to {out}")


if __name__ == "__main__":
    main()
