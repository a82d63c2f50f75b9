#!/usr/bin/env python3
"""Upscaler fixtures from spandrel (pinned in setup_env.sh) and A1111 v1.10.1's upscale code
restated, for crates/sumi-models/tests/upscalers.rs and crates/sumi-pipeline/tests/upscale.rs.

Tiny random-weight networks in every key layout Sumi reads, written as such files are found
in the wild (Real-ESRGAN's `.pth` with a `params_ema`/`params` wrapper, old-arch ESRGAN state
dicts, BSRGAN, ESRGAN+, SRVGGNetCompact, `.safetensors`), each loaded back through
`spandrel.ModelLoader().load_from_file` (its detection, its layout conversion) and run on a
random input. spandrel fixes the dense-block growth to 32 channels; the script shrinks it to 3
(by patching `RRDB.__init__`'s `gc`) so the files stay tiny; Sumi reads it from the shapes.

Then A1111's `upscaler_utils.upscale_with_model` (Pillow grid tiling, `images.split_grid` /
`combine_grid`), `Upscaler.upscale` (the pass loop) and `images.resize_image`'s `resize`,
restated over a spandrel model with small tiles, and Pillow NEAREST resizes.

Pillow must be 9.5.0, the version A1111 v1.10.1 pins (newer Pillow sometimes runs Lanczos's
vertical pass first, which moves pixels); as in make_inpaint_fixtures.py:
    tools/reference/.venv/bin/pip install --no-deps --target tools/reference/.pil95 pillow==9.5.0
Usage:
    tools/reference/.venv/bin/python tools/reference/make_upscaler_fixtures.py fixtures/upscalers
"""
import importlib
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PIL95", os.path.join(HERE, ".pil95")))

import PIL  # noqa: E402
import numpy as np  # noqa: E402
import spandrel  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

assert PIL.__version__ == "9.5.0", f"A1111 v1.10.1 pins Pillow 9.5.0; this is {PIL.__version__}"

GC = 3  # dense-block growth channels of the fixtures (real files: 32)



def shrink_growth():
    """spandrel's RRDB blocks with GC growth channels instead of 32 (done by main only, so
    that tools/bench/upscale.py can import the A1111 restatement below)."""
    block = importlib.import_module("spandrel.architectures.__arch_helpers.block")
    rrdb_init = block.RRDB.__init__

    def small_rrdb_init(self, *args, gc=32, **kw):
        rrdb_init(self, *args, gc=GC, **kw)

    block.RRDB.__init__ = small_rrdb_init


ESRGAN = spandrel.architectures.ESRGAN.ESRGAN
Compact = spandrel.architectures.Compact.Compact

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


def randomize(model, gen):
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("weight") and v.ndim == 4:
            fan_in = v.shape[1] * v.shape[2] * v.shape[3]
            sd[k] = torch.randn(v.shape, generator=gen) * (1.0 / math.sqrt(fan_in))
        elif k.endswith("weight"):  # PReLU slopes
            sd[k] = torch.rand(v.shape, generator=gen) * 0.6 - 0.1
        else:
            sd[k] = torch.randn(v.shape, generator=gen) * 0.05
    model.load_state_dict(sd)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def new_names(old, upsamples, bsrgan):
    """Old-arch names → Real-ESRGAN (or BSRGAN) names (the inverse of spandrel's map)."""
    nb = max(int(k.split(".")[3]) for k in old if k.startswith("model.1.sub.") and "RDB" in k) + 1
    out = {}
    for k, v in old.items():
        p = k.split(".")
        kind = p[-1]
        if k.startswith("model.1.sub.") and "RDB" in k:
            n, r, c = p[3], p[4][3:], p[5][4:]
            out[f"RRDB_trunk.{n}.RDB{r}.conv{c}.{kind}" if bsrgan else f"body.{n}.rdb{r}.conv{c}.{kind}"] = v
        elif k.startswith(f"model.1.sub.{nb}."):
            out[f"{'trunk_conv' if bsrgan else 'conv_body'}.{kind}"] = v
        else:
            i = int(p[1])
            if i == 0:
                name = "conv_first"
            elif i == 3 * upsamples + 2:
                name = "HRconv" if bsrgan else "conv_hr"
            elif i == 3 * upsamples + 4:
                name = "conv_last"
            else:
                name = f"upconv{i // 3}" if bsrgan else f"conv_up{i // 3}"
            out[f"{name}.{kind}"] = v
    return out


def esrgan(gen, in_nc, scale, nb, plus=False, nf=4):
    m = ESRGAN(in_nc=in_nc, out_nc=3, num_filters=nf, num_blocks=nb, scale=scale, plus=plus)
    return randomize(m, gen), int(math.log2(scale))


def models(gen):
    """(file name, object as saved, expected config)"""
    out = []
    sd, up = esrgan(gen, 3, 4, 2)
    out.append(("esrgan_new_x4.pth", {"params_ema": new_names(sd, up, False)},
                dict(layout="New", in_channels=3, num_feat=4, num_block=2, upsamples=2, shuffle=None)))
    sd, up = esrgan(gen, 12, 4, 1)
    out.append(("esrgan_new_x2.pth", {"params_ema": new_names(sd, up, False)},
                dict(layout="New", in_channels=12, num_feat=4, num_block=1, upsamples=2, shuffle=2)))
    sd, up = esrgan(gen, 48, 4, 1)
    out.append(("esrgan_new_x1.safetensors", new_names(sd, up, False),
                dict(layout="New", in_channels=48, num_feat=4, num_block=1, upsamples=2, shuffle=4)))
    sd, up = esrgan(gen, 3, 4, 1, nf=5)
    out.append(("esrgan_old_x4.pth", sd,
                dict(layout="Old", in_channels=3, num_feat=5, num_block=1, upsamples=2, shuffle=None)))
    sd, up = esrgan(gen, 3, 2, 1)
    out.append(("esrgan_old_x2.safetensors", sd,
                dict(layout="Old", in_channels=3, num_feat=4, num_block=1, upsamples=1, shuffle=None)))
    sd, up = esrgan(gen, 3, 4, 1)
    out.append(("esrgan_bsrgan_x4.pth", new_names(sd, up, True),
                dict(layout="Bsrgan", in_channels=3, num_feat=4, num_block=1, upsamples=2, shuffle=None)))
    sd, up = esrgan(gen, 3, 4, 1, plus=True)
    out.append(("esrgan_plus_x4.safetensors", sd,
                dict(layout="Plus", in_channels=3, num_feat=4, num_block=1, upsamples=2, shuffle=None)))
    c = Compact(num_in_ch=3, num_out_ch=3, num_feat=6, num_conv=2, upscale=4)
    out.append(("compact_x4.pth", {"params": randomize(c, gen)},
                dict(in_channels=3, num_feat=6, num_conv=2, scale=4)))
    c = Compact(num_in_ch=3, num_out_ch=3, num_feat=5, num_conv=1, upscale=2)
    out.append(("compact_x2.safetensors", {f"module.{k}": v for k, v in randomize(c, gen).items()},
                dict(in_channels=3, num_feat=5, num_conv=1, scale=2)))
    return out


# ---- A1111 v1.10.1, restated (modules/upscaler_utils.py, modules/images.py, modules/upscaler.py)

def pil_image_to_torch_bgr(img):
    img = np.array(img.convert("RGB"))
    img = img[:, :, ::-1]
    img = np.transpose(img, (2, 0, 1))
    img = np.ascontiguousarray(img) / 255
    return torch.from_numpy(img)


def torch_bgr_to_pil_image(tensor):
    tensor = tensor.squeeze(0)
    arr = tensor.float().cpu().clamp_(0, 1).numpy()
    arr = 255.0 * np.moveaxis(arr, 0, 2)
    arr = arr.round().astype(np.uint8)
    arr = arr[:, :, ::-1]
    return Image.fromarray(arr, "RGB")


def upscale_pil_patch(model, img):
    with torch.inference_mode():
        tensor = pil_image_to_torch_bgr(img).unsqueeze(0).to(dtype=torch.float32)
        return torch_bgr_to_pil_image(model(tensor))


class Grid:
    def __init__(self, tiles, tile_w, tile_h, image_w, image_h, overlap):
        self.tiles, self.tile_w, self.tile_h = tiles, tile_w, tile_h
        self.image_w, self.image_h, self.overlap = image_w, image_h, overlap


def split_grid(image, tile_w, tile_h, overlap):
    w, h = image.size
    non_overlap_width = tile_w - overlap
    non_overlap_height = tile_h - overlap
    cols = math.ceil((w - overlap) / non_overlap_width)
    rows = math.ceil((h - overlap) / non_overlap_height)
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = Grid([], tile_w, tile_h, w, h, overlap)
    for row in range(rows):
        row_images = []
        y = int(row * dy)
        if y + tile_h >= h:
            y = h - tile_h
        for col in range(cols):
            x = int(col * dx)
            if x + tile_w >= w:
                x = w - tile_w
            tile = image.crop((x, y, x + tile_w, y + tile_h))
            row_images.append([x, tile_w, tile])
        grid.tiles.append([y, tile_h, row_images])
    return grid


def combine_grid(grid):
    def make_mask_image(r):
        r = r * 255 / grid.overlap
        r = r.astype(np.uint8)
        return Image.fromarray(r, 'L')

    mask_w = make_mask_image(np.arange(grid.overlap, dtype=np.float32).reshape((1, grid.overlap)).repeat(grid.tile_h, axis=0))
    mask_h = make_mask_image(np.arange(grid.overlap, dtype=np.float32).reshape((grid.overlap, 1)).repeat(grid.image_w, axis=1))
    combined_image = Image.new("RGB", (grid.image_w, grid.image_h))
    for y, h, row in grid.tiles:
        combined_row = Image.new("RGB", (grid.image_w, h))
        for x, w, tile in row:
            if x == 0:
                combined_row.paste(tile, (0, 0))
                continue
            combined_row.paste(tile.crop((0, 0, grid.overlap, h)), (x, 0), mask=mask_w)
            combined_row.paste(tile.crop((grid.overlap, 0, w, h)), (x + grid.overlap, 0))
        if y == 0:
            combined_image.paste(combined_row, (0, 0))
            continue
        combined_image.paste(combined_row.crop((0, 0, combined_row.width, grid.overlap)), (0, y), mask=mask_h)
        combined_image.paste(combined_row.crop((0, grid.overlap, combined_row.width, h)), (0, y + grid.overlap))
    return combined_image


def upscale_with_model(model, img, *, tile_size, tile_overlap=0):
    if tile_size <= 0:
        return upscale_pil_patch(model, img)
    grid = split_grid(img, tile_size, tile_size, tile_overlap)
    newtiles = []
    for y, h, row in grid.tiles:
        newrow = []
        for x, w, tile in row:
            output = upscale_pil_patch(model, tile)
            scale_factor = output.width // tile.width
            newrow.append([x * scale_factor, w * scale_factor, output])
        newtiles.append([y * scale_factor, h * scale_factor, newrow])
    newgrid = Grid(newtiles, tile_w=grid.tile_w * scale_factor, tile_h=grid.tile_h * scale_factor,
                   image_w=grid.image_w * scale_factor, image_h=grid.image_h * scale_factor,
                   overlap=grid.overlap * scale_factor)
    return combine_grid(newgrid)


def upscale_loop(img, scale, do_upscale):
    """Upscaler.upscale"""
    dest_w = int((img.width * scale) // 8 * 8)
    dest_h = int((img.height * scale) // 8 * 8)
    passes = 0
    for i in range(3):
        if img.width >= dest_w and img.height >= dest_h and (i > 0 or scale != 1):
            break
        shape = (img.width, img.height)
        img = do_upscale(img)
        passes += 1
        if shape == (img.width, img.height):
            break
    if img.width != dest_w or img.height != dest_h:
        img = img.resize((int(dest_w), int(dest_h)), resample=LANCZOS)
    return img, passes


def resize(im, w, h, do_upscale):
    """images.resize_image's inner `resize` with an upscaler other than None"""
    scale = max(w / im.width, h / im.height)
    if scale > 1.0:
        im, _ = upscale_loop(im, scale, do_upscale)
    if im.width != w or im.height != h:
        im = im.resize((w, h), resample=LANCZOS)
    return im


def rand_image(rng, w, h):
    # smooth-ish content (a blurred random field) so tiles and seams matter
    small = rng.integers(0, 256, (max(h // 4, 2), max(w // 4, 2), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
    noise = rng.integers(-20, 21, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def u8(img):
    return torch.from_numpy(np.array(img, dtype=np.uint8).copy())


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    shrink_growth()
    gen = torch.Generator().manual_seed(20261206)
    rng = np.random.default_rng(20261206)
    x = torch.rand((1, 3, 9, 11), generator=gen)
    io = {"input": x}
    cases = []
    loaded = {}
    for name, obj, expect in models(gen):
        path = os.path.join(out, name)
        if name.endswith(".pth"):
            torch.save(obj, path)
        else:
            save_file(obj, path)
        desc = spandrel.ModelLoader().load_from_file(path)
        desc.model.eval()
        loaded[name] = desc
        with torch.no_grad():
            y = desc.model(x)
        stem = name.rsplit(".", 1)[0]
        io[f"out.{stem}"] = y.contiguous()
        cases.append(dict(file=name, architecture=desc.architecture.id, scale=desc.scale,
                          input_channels=desc.input_channels, output_channels=desc.output_channels,
                          tags=desc.tags, expect=expect))
    save_file(io, os.path.join(out, "io.safetensors"))

    # A1111's tiling, pass loop and resize over spandrel models; Pillow NEAREST
    images = {}
    tiling = []
    big = rand_image(rng, 40, 30)
    small = rand_image(rng, 12, 10)
    images["big"], images["small"] = u8(big), u8(small)
    for model, img, tile, overlap in [("compact_x2.safetensors", "big", 16, 4),
                                      ("esrgan_old_x2.safetensors", "big", 12, 2),
                                      ("esrgan_new_x2.pth", "big", 16, 4),
                                      ("compact_x4.pth", "small", 16, 4),
                                      ("compact_x2.safetensors", "small", 0, 0)]:
        src = big if img == "big" else small
        res = upscale_with_model(loaded[model].model, src, tile_size=tile, tile_overlap=overlap)
        key = f"tiled.{len(tiling)}"
        images[key] = u8(res)
        tiling.append(dict(model=model, image=img, tile=tile, overlap=overlap, output=key))
    loops = []
    for model, scale, tile in [("compact_x2.safetensors", 5.0, 16), ("compact_x4.pth", 2.0, 16),
                               ("compact_x2.safetensors", 1.0, 16), ("Lanczos", 2.5, 0),
                               ("Nearest", 3.0, 0)]:
        if model == "Lanczos":
            do = lambda im, s=scale: im.resize((int(im.width * s), int(im.height * s)), resample=LANCZOS)  # noqa: E731
        elif model == "Nearest":
            do = lambda im, s=scale: im.resize((int(im.width * s), int(im.height * s)), resample=NEAREST)  # noqa: E731
        else:
            do = lambda im, m=loaded[model].model, t=tile: upscale_with_model(m, im, tile_size=t, tile_overlap=4)  # noqa: E731
        res, passes = upscale_loop(small, scale, do)
        key = f"loop.{len(loops)}"
        images[key] = u8(res)
        loops.append(dict(upscaler=model, scale=scale, tile=tile, overlap=4, passes=passes, output=key))
    resizes = []
    for model, w, h in [("compact_x2.safetensors", 30, 17), ("compact_x2.safetensors", 8, 6),
                        ("Lanczos", 27, 31)]:
        if model == "Lanczos":
            do = lambda im: im.resize((int(im.width * max(w / im.width, h / im.height)),  # noqa: E731
                                       int(im.height * max(w / im.width, h / im.height))), resample=LANCZOS)
        else:
            do = lambda im, m=loaded[model].model: upscale_with_model(m, im, tile_size=16, tile_overlap=4)  # noqa: E731
        key = f"resize.{len(resizes)}"
        images[key] = u8(resize(small, w, h, do))
        resizes.append(dict(upscaler=model, width=w, height=h, tile=16, overlap=4, output=key))
    nearest = []
    for w, h in [(23, 17), (7, 5), (36, 30), (12, 10), (5, 13), (41, 3)]:
        key = f"nearest.{len(nearest)}"
        images[key] = u8(small.resize((w, h), resample=NEAREST))
        nearest.append(dict(width=w, height=h, output=key))
    save_file(images, os.path.join(out, "images.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(dict(spandrel=spandrel.__version__, growth_channels=GC, models=cases, tiling=tiling,
                       loops=loops, resizes=resizes, nearest=nearest), f, indent=1)


if __name__ == "__main__":
    main()
