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
from PIL import Image, ImageOps

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


def sha(im):
    assert im.mode == "RGB"
    return hashlib.sha256(im.tobytes()).hexdigest()


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
    synth_rgb(24, 16, 7).save(os.path.join(out, "synth.jpg"), quality=90)

    cases = []

    def add(name, inp, op, args, im):
        case = {"name": name, "input": inp, "op": op, "args": args, "width": im.width, "height": im.height, "sha256": sha(im)}
        if not inp.startswith("shared:"):
            case["expected"] = f"expected/{name}.png"
            im.save(os.path.join(out, case["expected"]))
        cases.append(case)

    # Loading: flattening, grey+alpha, EXIF orientation, lossless WebP, JPEG (decoded by libjpeg-turbo).
    for f in ["synth_rgb.png", "synth_rgba.png", "synth_la.png", "synth_exif6.png", "synth_lossless.webp", "synth.jpg"]:
        add("load_" + f.replace(".", "_"), f, "load", {}, load_like_ui(os.path.join(out, f)))

    # Plain Lanczos: up, down, one axis only, odd sizes, extreme ratios.
    for (w, h) in [(64, 48), (20, 11), (37, 60), (90, 23), (7, 5), (1, 1), (111, 3), (5, 77), (36, 23)]:
        add(f"lanczos_synth_{w}x{h}", "synth_rgb.png", "lanczos", {"w": w, "h": h}, rgb.resize((w, h), LANCZOS))
    # Boxes, including the zero-extent boxes of the fill mode and fractional ones.
    for (w, h, box) in [(37, 5, (0, 0, 37, 0)), (37, 4, (0, 23, 37, 23)), (6, 23, (0, 0, 0, 23)), (3, 23, (37, 0, 37, 23)),
                        (30, 20, (2.5, 1.25, 30.75, 22.0)), (10, 10, (3, 4, 13, 14)), (50, 9, (1, 0, 36, 23))]:
        add(f"box_synth_{w}x{h}_{'_'.join(str(v) for v in box)}".replace(".", "p"), "synth_rgb.png", "lanczos_box",
            {"w": w, "h": h, "box": list(map(float, box))}, rgb.resize((w, h), LANCZOS, box=box))
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
