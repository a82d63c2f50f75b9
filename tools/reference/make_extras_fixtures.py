#!/usr/bin/env python3
"""Extras upscale fixtures for crates/sumi-pipeline/tests/extras.rs: A1111 v1.10.1's
`scripts/postprocessing_upscale.py` (`ScriptPostprocessingUpscale.upscale` / `process`,
`limit_size_by_one_dimention`), `modules/postprocessing.py` (the infotext join) and
`ui_common.plaintext_to_html` restated over Pillow 9.5.0 (the version A1111 pins) with the
built-in Lanczos / Nearest upscalers and one tiny model file of fixtures/upscalers/
(`compact_x2.safetensors`, run through spandrel and A1111's tiling restated in
make_upscaler_fixtures.py); plus `Image.blend` on random pictures.

    tools/reference/.venv/bin/pip install --no-deps --target tools/reference/.pil95 pillow==9.5.0
    tools/reference/.venv/bin/python tools/reference/make_extras_fixtures.py fixtures/extras
"""
import html
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_upscaler_fixtures as up  # noqa: E402  (puts Pillow 9.5.0 first on the path)

import numpy as np  # noqa: E402
import spandrel  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

TILE, OVERLAP = 16, 4
MODEL_FILE = "compact_x2.safetensors"


def limit_size_by_one_dimention(w, h, limit):
    if h > w and h > limit:
        w = limit * w // h
        h = limit
    elif w > limit:
        h = limit * h // w
        w = limit
    return int(w), int(h)


def quote(text):
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class Scaler:
    """modules/upscaler.py Upscaler.upscale over one do_upscale."""

    def __init__(self, name, model=None):
        self.name = name
        self.model = model

    def do_upscale(self, img, scale):
        if self.name == "Lanczos":
            return img.resize((int(img.width * scale), int(img.height * scale)), resample=up.LANCZOS)
        if self.name == "Nearest":
            return img.resize((int(img.width * scale), int(img.height * scale)), resample=up.NEAREST)
        return up.upscale_with_model(self.model, img, tile_size=TILE, tile_overlap=OVERLAP)

    def upscale(self, img, scale):
        res, _ = up.upscale_loop(img, scale, lambda im: self.do_upscale(im, scale))
        return res


def pp_upscale(image, info, upscaler, upscale_mode, upscale_by, max_side_length, upscale_to_width,
               upscale_to_height, upscale_crop):
    """ScriptPostprocessingUpscale.upscale (no cache)."""
    if upscale_mode == 1:
        upscale_by = max(upscale_to_width / image.width, upscale_to_height / image.height)
        info["Postprocess upscale to"] = f"{upscale_to_width}x{upscale_to_height}"
    else:
        info["Postprocess upscale by"] = upscale_by
        if max_side_length != 0 and max(*image.size) * upscale_by > max_side_length:
            upscale_mode = 1
            upscale_crop = False
            upscale_to_width, upscale_to_height = limit_size_by_one_dimention(
                image.width * upscale_by, image.height * upscale_by, max_side_length)
            upscale_by = max(upscale_to_width / image.width, upscale_to_height / image.height)
            info["Max side length"] = max_side_length
    image = upscaler.upscale(image, upscale_by)
    if upscale_mode == 1 and upscale_crop:
        cropped = Image.new("RGB", (upscale_to_width, upscale_to_height))
        cropped.paste(image, box=(upscale_to_width // 2 - image.width // 2,
                                  upscale_to_height // 2 - image.height // 2))
        image = cropped
        info["Postprocess crop to"] = f"{image.width}x{image.height}"
    return image


def process(image, scalers, c):
    """ScriptPostprocessingUpscale.process + run_postprocessing's infotext."""
    info = {}
    args = (c["mode"], c["by"], c["max_side"], c["w"], c["h"], c["crop"])
    name1 = None if c["upscaler_1"] == "None" else c["upscaler_1"]
    out = image
    if name1 is not None:
        u1 = scalers[name1]
        name2 = None if c["upscaler_2"] == "None" else c["upscaler_2"]
        u2 = scalers[name2] if name2 else None
        out = pp_upscale(image, info, u1, *args)
        info["Postprocess upscaler"] = u1.name
        if u2 and c["visibility"] > 0:
            second = pp_upscale(image, info, u2, *args)
            out = Image.blend(out, second, c["visibility"])
            info["Postprocess upscaler 2"] = u2.name
    infotext = ", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in info.items() if v is not None])
    content = "<br>\n".join(html.escape(x) for x in infotext.split('\n'))
    return out, infotext, f"<p>{content}</p>"


def case(name, upscaler_1, *, mode=0, by=2.0, max_side=0, w=512, h=512, crop=True, upscaler_2="None",
         visibility=0.0, image="small"):
    return dict(name=name, image=image, mode=mode, by=by, max_side=max_side, w=w, h=h, crop=crop,
                upscaler_1=upscaler_1, upscaler_2=upscaler_2, visibility=visibility)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261207)
    model = spandrel.ModelLoader().load_from_file(
        os.path.join(HERE, "..", "..", "fixtures", "upscalers", MODEL_FILE)).model.eval()
    stem = MODEL_FILE.rsplit(".", 1)[0]
    scalers = {"Lanczos": Scaler("Lanczos"), "Nearest": Scaler("Nearest"), stem: Scaler(stem, model)}
    pics = {"small": up.rand_image(rng, 13, 10), "big": up.rand_image(rng, 40, 30),
            "tall": up.rand_image(rng, 10, 17)}
    images = {k: up.u8(v) for k, v in pics.items()}
    cases = [
        case("by 2 Lanczos", "Lanczos"),
        case("by 2.5 Nearest", "Nearest", by=2.5),
        case("to 40x30 crop", "Lanczos", mode=1, w=40, h=30),
        case("to 40x30 no crop", "Lanczos", mode=1, w=40, h=30, crop=False),
        case("to 20x44 crop tall", "Nearest", mode=1, w=20, h=44),
        case("model by 3 + Lanczos", stem, by=3.0, upscaler_2="Lanczos", visibility=0.37),
        case("Lanczos + Nearest to 30x30", "Lanczos", mode=1, w=30, h=30, upscaler_2="Nearest",
             visibility=0.5),
        case("max side 40", "Lanczos", by=4.0, max_side=40, image="big"),
        case("max side 30 tall", "Nearest", by=3.0, max_side=30, image="tall", upscaler_2="Lanczos",
             visibility=0.8),
        case("None", "None", upscaler_2="Lanczos", visibility=0.5),
        case("visibility 0", "Nearest", by=1.5, upscaler_2="Lanczos", visibility=0.0),
        case("model to 33x21", stem, mode=1, w=33, h=21, image="small"),
    ]
    for c in cases:
        img, infotext, html_info = process(pics[c["image"]], scalers, c)
        key = f"case.{cases.index(c)}"
        images[key] = up.u8(img)
        c.update(output=key, infotext=infotext, html_info=html_info, width=img.width, height=img.height)
    blends = []
    for alpha in [0.001, 0.1, 0.25, 0.37, 0.5, 0.7, 0.999, 0.0, 1.0]:
        a = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
        b = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
        i = len(blends)
        images[f"blend.{i}.a"], images[f"blend.{i}.b"] = up.u8(a), up.u8(b)
        images[f"blend.{i}.out"] = up.u8(Image.blend(a, b, alpha))
        blends.append(dict(alpha=alpha, a=f"blend.{i}.a", b=f"blend.{i}.b", output=f"blend.{i}.out"))
    save_file(images, os.path.join(out, "images.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(dict(pillow=up.PIL.__version__, model=MODEL_FILE, tile=TILE, overlap=OVERLAP,
                       cases=cases, blends=blends), f, indent=1)


if __name__ == "__main__":
    main()
