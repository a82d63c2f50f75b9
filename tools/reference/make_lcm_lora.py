#!/usr/bin/env python3
"""A LoRA file in the layout of LCM-LoRA for SD1.5 (`latent-consistency/lcm-lora-sdv1-5`,
`pytorch_lora_weights.safetensors`, ~135 MB) with random weights. Stdlib + numpy.

  make_lcm_lora.py SOURCE OUT [--rank 64] [--seed 0]

SOURCE gives the U-Net's module names and weight shapes: a diffusers U-Net
(`unet/diffusion_pytorch_model.safetensors`, read from its header only) or a tiny-model manifest
(`fixtures/tiny/sd1/manifest.json`, its canonical `unet.*` names).

The layout: LCM-LoRA was distilled with PEFT on diffusers' U-Net (rank 64, the target modules of
diffusers' `examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py`: every attention
linear `to_q`, `to_k`, `to_v`, `to_out.0`, the transformers' `proj_in`/`proj_out`,
`ff.net.0.proj`, `ff.net.2`, the resnets' `conv1`, `conv2`, `conv_shortcut`, `time_emb_proj`,
and the `downsamplers.0.conv`/`upsamplers.0.conv`; no text encoder) and released in kohya's
key style over diffusers module names, the style A1111's Lora extension reads (it splits a key
at its first `.`, so a PEFT file's `unet.down_blocks.0….lora_A.weight` keys would match nothing
there):

  lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight   [64, 320, 1, 1]
  lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight     [320, 64, 1, 1]
  lora_unet_down_blocks_0_attentions_0_proj_in.alpha              []
  lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight        [64, 320, 3, 3]
  lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight          [320, 64, 1, 1]

f16, alpha = rank (scale 1). Values: lora_down ~ N(0, 1/fan_in), lora_up ~ N(0, 1e-6), so the
merged change is a small fraction of a weight (timings, not pictures, are what this is for).
Prints the module count, parameter count and file size.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

# diffusers' train_lcm_distill_lora_sd_wds.py `lora_target_modules` (PEFT matches a module whose
# name is the target or ends with "." + target)
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
           "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > 100 << 20:
            sys.exit(f"{path}: header of {n} bytes")
        return json.loads(f.read(n))


def shapes(source):
    """{diffusers module name: weight shape} of the U-Net."""
    if source.endswith(".json"):
        with open(source) as f:
            m = json.load(f)
        out = {}
        for fdesc in m["files"].values():
            for _ldm, shape, names, _sum in fdesc["tensors"]:
                for n in names:
                    if n.startswith("unet.") and n.endswith(".weight"):
                        out[n[len("unet."):-len(".weight")]] = shape
        return out
    return {k[: -len(".weight")]: v["shape"] for k, v in header(source).items()
            if k != "__metadata__" and k.endswith(".weight")}


def targeted(name):
    return any(name == t or name.endswith("." + t) for t in TARGETS)


def save_st(path, tensors):
    """A safetensors file of f16 numpy arrays, keys sorted (reruns are byte-identical)."""
    hdr, offset, blobs = {}, 0, []
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k], dtype="<f2").tobytes()
        hdr[k] = {"dtype": "F16", "shape": list(tensors[k].shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    mods = sorted((n, s) for n, s in shapes(a.source).items() if targeted(n))
    if not mods:
        sys.exit(f"{a.source}: no LCM-LoRA target module found")
    sd, params = {}, 0
    for name, shape in mods:
        out_f, in_f, kernel = shape[0], shape[1], list(shape[2:])
        r = min(a.rank, in_f * int(np.prod(kernel or [1])), out_f)
        fan_in = in_f * int(np.prod(kernel or [1]))
        down = rng.standard_normal((r, in_f, *kernel), dtype=np.float32) / np.sqrt(fan_in)
        up = rng.standard_normal((out_f, r, *[1] * len(kernel)), dtype=np.float32) * 1e-3
        base = "lora_unet_" + name.replace(".", "_")
        sd[base + ".lora_down.weight"] = down
        sd[base + ".lora_up.weight"] = up
        sd[base + ".alpha"] = np.array(float(r), dtype=np.float32)
        params += down.size + up.size
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_st(a.out, sd)
    kinds = {}
    for name, _ in mods:
        k = next(t for t in TARGETS if name == t or name.endswith("." + t))
        kinds[k] = kinds.get(k, 0) + 1
    print(f"{a.out}: {len(mods)} modules {kinds}, {len(sd)} tensors, rank {a.rank}, "
          f"{params / 1e6:.1f} M parameters, {os.path.getsize(a.out) / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
