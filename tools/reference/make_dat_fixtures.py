#!/usr/bin/env python3
"""DAT fixtures from spandrel 0.4.2 (pinned in setup_env.sh), for crates/sumi-models/tests/dat.rs
and crates/sumi-pipeline/tests/upscale_dat.rs: tiny random-weight DAT networks (upsamplers
pixelshuffle ×2 and pixelshuffledirect ×3 and ×4, residual connections 1conv and 3conv, split sizes
2×4, 4×8 and 2×2, expansion factors 2 and 1.5, depths and heads per layer (a depth-1 network whose
heads spandrel reads from `pos3.2`), with and without qkv bias), weights in f16, written as such
files are found (a `params` wrapped `.pth`, a bare state dict, `.safetensors`), each loaded back
through `spandrel.ModelLoader().load_from_file` (its detection and its reading of every size) and
run on random inputs whose sides are not multiples of the split sizes (DAT pads q/k/v with zeros
inside its attention). Inputs under 16 pixels go through the descriptor's size requirement (reflect
padding to 16, cropped back) as A1111 calls it. A1111 v1.10.1 runs DAT files through spandrel
(modules/dat_model.py) in `upscaler_utils.upscale_with_model` with DAT_tile / DAT_tile_overlap,
restated here on a 40x30 picture with small tiles.

Usage: tools/reference/.venv/bin/python tools/reference/make_dat_fixtures.py fixtures/dat
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_upscaler_fixtures as a1111  # noqa: E402  (A1111's upscale_with_model, Pillow 9.5.0)
import numpy as np  # noqa: E402
import spandrel  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from spandrel.__helpers.size_req import pad_tensor  # noqa: E402

DAT = spandrel.architectures.DAT.DAT


def randomize(model, gen):
    sd = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point() or "attn_mask" in k or k.endswith("rpe_biases"):
            sd[k] = v  # buffers, as the model computes them
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif k.endswith("weight") and v.ndim == 4:
            fan_in = v.shape[1] * v.shape[2] * v.shape[3]
            sd[k] = torch.randn(v.shape, generator=gen) * (1.0 / math.sqrt(fan_in))
        elif k.endswith("weight") and v.ndim == 2:
            sd[k] = torch.randn(v.shape, generator=gen) * (1.0 / math.sqrt(v.shape[1]))
        elif k.endswith("weight") or k.endswith("temperature"):  # norms
            sd[k] = 1.0 + torch.randn(v.shape, generator=gen) * 0.1
        else:
            sd[k] = torch.randn(v.shape, generator=gen) * 0.05
    model.load_state_dict(sd)
    return {k: (v.half() if v.is_floating_point() and "attn_mask" not in k else v).contiguous()
            for k, v in model.state_dict().items()}


def dat(gen, **kw):
    args = dict(img_size=16, in_chans=3, embed_dim=32, split_size=[2, 4], depth=[3, 2], num_heads=[2, 4],
                expansion_factor=2.0, resi_connection="1conv", upsampler="pixelshuffle", upscale=2)
    args.update(kw)
    return randomize(DAT(**args).eval(), gen)


def models(gen):
    """(file name, object as saved, expected sizes)"""
    return [
        ("dat_pixelshuffle_x2.pth",
         {"params": dat(gen)},
         dict(upsampler="pixelshuffle", scale=2, embed_dim=32, depths=[3, 2], heads=[2, 4], split=[2, 4],
              hidden=64, img_size=16, qkv_bias=True, three_conv=False)),
        ("dat_direct_x3_3conv.safetensors",
         dat(gen, img_size=8, split_size=[4, 8], depth=[3, 2, 3], num_heads=[4, 2, 2], expansion_factor=1.5,
             resi_connection="3conv", upsampler="pixelshuffledirect", upscale=3),
         dict(upsampler="pixelshuffledirect", scale=3, embed_dim=32, depths=[3, 2, 3], heads=[4, 2, 2],
              split=[4, 8], hidden=48, img_size=8, qkv_bias=True, three_conv=True)),
        ("dat_direct_x4_nobias.pth",
         dat(gen, embed_dim=48, split_size=[2, 2], depth=[1], num_heads=[4], qkv_bias=False, upscale=4,
             upsampler="pixelshuffledirect"),
         dict(upsampler="pixelshuffledirect", scale=4, embed_dim=48, depths=[1], heads=[4], split=[2, 2],
              hidden=96, img_size=64, qkv_bias=False, three_conv=False)),
    ]


def run(desc, x):
    """`desc.model` on `x` padded as the descriptor pads it (to 16), the padding cropped; not
    clamped."""
    _, _, h, w = x.shape
    _, xp = pad_tensor(x, desc.size_requirements)
    with torch.no_grad():
        y = desc.model(xp)
    return y[..., : h * desc.scale, : w * desc.scale]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(20261208)
    io = {}
    cases = []
    for name, obj, expect in models(gen):
        path = os.path.join(out, name)
        if name.endswith(".pth"):
            torch.save(obj, path)
        else:
            save_file(obj, path)
        desc = spandrel.ModelLoader().load_from_file(path)
        assert desc.architecture.id == "DAT", desc.architecture.id
        desc.model.eval()
        stem = name.rsplit(".", 1)[0]
        shapes = {"dat_pixelshuffle_x2": [(16, 16), (19, 23), (9, 12)],
                  "dat_direct_x3_3conv": [(17, 21)],
                  "dat_direct_x4_nobias": [(16, 18)]}[stem]
        for h, w in shapes:
            x = torch.rand((1, 3, h, w), generator=gen)
            y = run(desc, x)
            io[f"{stem}/in_{h}x{w}"] = x.contiguous()
            io[f"{stem}/out_{h}x{w}"] = y.contiguous()
        hp = desc.model.hyperparameters
        assert hp["split_size"] == expect["split"] and hp["img_size"] == expect["img_size"], hp
        assert hp["depth"] == expect["depths"] and hp["num_heads"] == expect["heads"], hp
        cases.append(dict(file=name, stem=stem, scale=desc.scale, inputs=[f"{h}x{w}" for h, w in shapes],
                          tags=desc.tags, expect=expect))
        print(name, desc.scale, desc.tags)
    # A1111's DAT tiling (upscale_with_model) over a spandrel model, with small tiles
    rng = np.random.default_rng(20261208)
    picture = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    io["tiled/input"] = torch.from_numpy(picture)
    tiling = []
    for file, tile, overlap in [("dat_pixelshuffle_x2.pth", 16, 4), ("dat_direct_x3_3conv.safetensors", 24, 8),
                                ("dat_pixelshuffle_x2.pth", 0, 0)]:
        desc = spandrel.ModelLoader().load_from_file(os.path.join(out, file))
        desc.model.eval()
        key = f"tiled/{len(tiling)}"
        img = a1111.upscale_with_model(desc, Image.fromarray(picture, "RGB"), tile_size=tile, tile_overlap=overlap)
        io[key] = torch.from_numpy(np.asarray(img).copy())
        tiling.append(dict(file=file, tile=tile, overlap=overlap, output=key))
    # Upscaler.upscale by 2 with the DAT upscaler: its passes in DAT_tile/DAT_tile_overlap tiles
    # (192/8, whatever ESRGAN_tile says), then the Lanczos resize to 80x56
    desc = spandrel.ModelLoader().load_from_file(os.path.join(out, "dat_pixelshuffle_x2.pth"))
    desc.model.eval()
    img, passes = a1111.upscale_loop(
        Image.fromarray(picture, "RGB"), 2.0,
        lambda im: a1111.upscale_with_model(desc, im, tile_size=192, tile_overlap=8))
    io["upscale/x2"] = torch.from_numpy(np.asarray(img).copy())
    upscale = dict(file="dat_pixelshuffle_x2.pth", scale=2.0, passes=passes, output="upscale/x2")
    save_file(io, os.path.join(out, "io.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"cases": cases, "tiling": tiling, "upscale": upscale}, f, indent=1)


if __name__ == "__main__":
    main()
