#!/usr/bin/env python3
"""Reference for crates/sumi-pipeline/tests/extras_rgba.rs: A1111 v1.10.1's Extras upscale of an
RGBA picture with the built-in upscalers, Pillow 9.5.0 (A1111's pin) as A1111 runs it:
modules/postprocessing.py run_postprocessing keeps RGBA (only other modes are converted to
RGB); scripts/postprocessing_upscale.py upscale() calls Upscaler.upscale (make_upscaler_fixtures
.upscale_loop) whose UpscalerLanczos / UpscalerNearest passes are img.resize on the RGBA picture
(Pillow resizes RGBA with LANCZOS over premultiplied colour, NEAREST channel by channel), then
the final LANCZOS to (w·scale)//8·8; the crop pastes onto Image.new("RGB") (alpha dropped); the
second upscaler's picture is converted to the first's mode, then Image.blend.

Usage: make_extras_rgba_fixtures.py OUT_DIR   (fixtures/extras_rgba)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_upscaler_fixtures as up  # noqa: E402  (puts Pillow 9.5.0 first on the path)

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

assert PIL.__version__ == "9.5.0", PIL.__version__

RESAMPLE = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}
CASES = [
    dict(name="lanczos_by_2", upscaler_1="Lanczos", scale=2.0),
    dict(name="nearest_by_2_5", upscaler_1="Nearest", scale=2.5),
    dict(name="lanczos_to_crop", upscaler_1="Lanczos", to=[40, 24]),
    dict(name="lanczos_nearest_blend", upscaler_1="Lanczos", upscaler_2="Nearest", visibility=0.4, scale=3.0),
]


def upscale(img, c, name):
    resample = RESAMPLE[name]
    if "to" in c:
        w, h = c["to"]
        scale = max(w / img.width, h / img.height)
    else:
        scale = c["scale"]
    out, _ = up.upscale_loop(img, scale, lambda im: im.resize((int(im.width * scale), int(im.height * scale)),
                                                              resample=resample))
    if "to" in c:
        cropped = Image.new("RGB", (w, h))
        cropped.paste(out, box=(w // 2 - out.width // 2, h // 2 - out.height // 2))
        out = cropped
    return out


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(16)
    rgb = np.asarray(up.rand_image(rng, 13, 10))
    alpha = rng.integers(0, 256, (10, 13, 1), dtype=np.uint8)
    alpha[0, :4] = 0
    alpha[1, :4] = 255
    src = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
    src.save(os.path.join(out_dir, "source.png"))
    src = Image.open(os.path.join(out_dir, "source.png"))
    assert src.mode == "RGBA"
    tensors = {}
    for c in CASES:
        img = upscale(src, c, c["upscaler_1"])
        if c.get("upscaler_2"):
            other = upscale(src, c, c["upscaler_2"])
            if img.mode != other.mode:
                other = other.convert(img.mode)
            img = Image.blend(img, other, c["visibility"])
        c["mode"] = img.mode
        tensors[c["name"]] = torch.from_numpy(np.asarray(img).copy())
        print(c["name"], img.mode, img.size)
    save_file(tensors, os.path.join(out_dir, "images.safetensors"))
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump({"cases": CASES}, f, indent=1)


if __name__ == "__main__":
    main()
