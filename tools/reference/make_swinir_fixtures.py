#!/usr/bin/env python3
"""SwinIR fixtures from spandrel 0.4.2 (pinned in setup_env.sh), for
crates/sumi-models/tests/swinir.rs: tiny random-weight SwinIR networks with each of the four
upsamplers (pixelshuffle, pixelshuffledirect, nearest+conv, none — the denoising/JPEG models,
window 7 and image range 255 as spandrel infers them), both residual connections (1conv,
3conv), depths and heads varying per layer, written as such files are found (a `params`/
`params_ema` wrapped `.pth`, a bare state dict, `.safetensors`), each loaded back through
`spandrel.ModelLoader().load_from_file` (its detection and its reading of every size) and run on
random inputs whose sides are not multiples of the window (spandrel's reflect padding, then the
crop). A1111 v1.10.1 runs SwinIR files through spandrel (extensions-builtin/SwinIR), in the
averaged tiles of `upscaler_utils.upscale_2`, restated here for crates/sumi-pipeline/tests/
upscale_swinir.rs (a 40x30 picture, small tiles).

Usage: tools/reference/.venv/bin/python tools/reference/make_swinir_fixtures.py fixtures/swinir
"""
import json
import math
import os
import sys

import numpy as np
import spandrel
import torch
from safetensors.torch import save_file

SwinIR = spandrel.architectures.SwinIR.SwinIR


def randomize(model, gen):
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("relative_position_index") or k.endswith("attn_mask"):
            sd[k] = v  # buffers, as the model computes them
        elif k.endswith("weight") and v.ndim == 4:
            fan_in = v.shape[1] * v.shape[2] * v.shape[3]
            sd[k] = torch.randn(v.shape, generator=gen) * (1.0 / math.sqrt(fan_in))
        elif k.endswith("weight") and v.ndim == 2:
            sd[k] = torch.randn(v.shape, generator=gen) * (1.0 / math.sqrt(v.shape[1]))
        elif k.endswith("weight"):  # LayerNorm
            sd[k] = 1.0 + torch.randn(v.shape, generator=gen) * 0.1
        elif k.endswith("relative_position_bias_table"):
            sd[k] = torch.randn(v.shape, generator=gen) * 0.5
        else:
            sd[k] = torch.randn(v.shape, generator=gen) * 0.05
    model.load_state_dict(sd)
    return {k: (v.half() if v.is_floating_point() and not k.endswith("attn_mask") else v).contiguous()
            for k, v in model.state_dict().items()}


def swinir(gen, **kw):
    args = dict(img_size=16, patch_size=1, in_chans=3, embed_dim=12, depths=[2, 2], num_heads=[2, 3],
                window_size=4, mlp_ratio=2.0, resi_connection="1conv")
    args.update(kw)
    return randomize(SwinIR(**args).eval(), gen)


def models(gen):
    """(file name, object as saved, expected sizes)"""
    return [
        ("swinir_pixelshuffle_x2.pth",
         {"params": swinir(gen, upscale=2, upsampler="pixelshuffle")},
         dict(upsampler="pixelshuffle", scale=2, embed_dim=12, depths=[2, 2], heads=[2, 3], window=4)),
        ("swinir_direct_x3.safetensors",
         swinir(gen, upscale=3, upsampler="pixelshuffledirect", depths=[2, 1, 3], num_heads=[3, 2, 1]),
         dict(upsampler="pixelshuffledirect", scale=3, embed_dim=12, depths=[2, 1, 3], heads=[3, 2, 1],
              window=4)),
        ("swinir_nearest_x4_3conv.pth",
         {"params_ema": swinir(gen, upscale=4, upsampler="nearest+conv", resi_connection="3conv",
                               embed_dim=16, num_heads=[4, 2])},
         dict(upsampler="nearest+conv", scale=4, embed_dim=16, depths=[2, 2], heads=[4, 2], window=4)),
        ("swinir_denoise_w7.pth",
         swinir(gen, upscale=1, upsampler="", img_size=21, window_size=7, embed_dim=8, depths=[2],
                num_heads=[2], img_range=255.0),
         dict(upsampler="", scale=1, embed_dim=8, depths=[2], heads=[2], window=7)),
    ]


def tiled_upscale_2(img, model, *, tile_size, tile_overlap, scale):
    """A1111 v1.10.1 modules/upscaler_utils.py `tiled_upscale_2`, restated (no progress bar)."""
    b, c, h, w = img.size()
    tile_size = min(tile_size, h, w)
    if tile_size <= 0:
        return model(img)
    stride = tile_size - tile_overlap
    h_idx_list = list(range(0, h - tile_size, stride)) + [h - tile_size]
    w_idx_list = list(range(0, w - tile_size, stride)) + [w - tile_size]
    result = torch.zeros(b, c, h * scale, w * scale, dtype=img.dtype)
    weights = torch.zeros_like(result)
    for h_idx in h_idx_list:
        for w_idx in w_idx_list:
            in_patch = img[..., h_idx: h_idx + tile_size, w_idx: w_idx + tile_size]
            out_patch = model(in_patch)
            result[..., h_idx * scale: (h_idx + tile_size) * scale,
                   w_idx * scale: (w_idx + tile_size) * scale].add_(out_patch)
            weights[..., h_idx * scale: (h_idx + tile_size) * scale,
                    w_idx * scale: (w_idx + tile_size) * scale].add_(torch.ones_like(out_patch))
    return result.div_(weights)


def upscale_2(rgb, model, tile_size, tile_overlap, scale):
    """`upscale_2` with `pil_image_to_torch_bgr` / `torch_bgr_to_pil_image`, on a uint8 HWC RGB
    array."""
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(rgb[:, :, ::-1], (2, 0, 1))) / 255)
    x = x.to(torch.float32).unsqueeze(0)
    with torch.no_grad():
        y = tiled_upscale_2(x, model, tile_size=tile_size, tile_overlap=tile_overlap, scale=scale)
    arr = y.squeeze(0).float().clamp_(0, 1).numpy()
    arr = 255.0 * np.moveaxis(arr, 0, 2)
    return arr.round().astype(np.uint8)[:, :, ::-1].copy()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(20261207)
    io = {}
    cases = []
    for name, obj, expect in models(gen):
        path = os.path.join(out, name)
        if name.endswith(".pth"):
            torch.save(obj, path)
        else:
            save_file(obj, path)
        desc = spandrel.ModelLoader().load_from_file(path)
        assert desc.architecture.id == "SwinIR", desc.architecture.id
        desc.model.eval()
        stem = name.rsplit(".", 1)[0]
        shapes = [(9, 11), (16, 16)] if expect["window"] == 4 else [(10, 13)]
        for h, w in shapes:
            x = torch.rand((1, 3, h, w), generator=gen)
            with torch.no_grad():
                y = desc.model(x)
            io[f"{stem}/in_{h}x{w}"] = x.contiguous()
            io[f"{stem}/out_{h}x{w}"] = y.contiguous()
        cases.append(dict(file=name, stem=stem, scale=desc.scale, inputs=[f"{h}x{w}" for h, w in shapes],
                          tags=desc.tags, expect=expect))
        print(name, desc.scale, desc.tags)
    # A1111's SwinIR tiling (upscale_2) over a spandrel model, with small tiles
    rng = np.random.default_rng(20261207)
    picture = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    io["tiled/input"] = torch.from_numpy(picture)
    tiling = []
    for file, tile, overlap in [("swinir_pixelshuffle_x2.pth", 16, 4), ("swinir_direct_x3.safetensors", 12, 5),
                                ("swinir_pixelshuffle_x2.pth", 0, 0)]:
        desc = spandrel.ModelLoader().load_from_file(os.path.join(out, file))
        desc.model.eval()
        key = f"tiled/{len(tiling)}"
        io[key] = torch.from_numpy(upscale_2(picture, desc.model, tile, overlap, desc.scale))
        tiling.append(dict(file=file, tile=tile, overlap=overlap, output=key))
    save_file(io, os.path.join(out, "io.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"cases": cases, "tiling": tiling}, f, indent=1)


if __name__ == "__main__":
    main()
