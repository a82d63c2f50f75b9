#!/usr/bin/env python3
"""Hypernetworks on the tiny SDXL base (fixtures/hypernet/sdxl/), checked by
crates/sumi-pipeline/tests/sdxl_hypernet.rs.

A1111 v1.10.1 applies hypernetworks on SDXL as on SD1: sd_models_xl.py turns xformers off in
sgm (sgm.modules.attention.XFORMERS_IS_AVAILABLE = False), so every SDXL attention is sgm's
CrossAttention, whose forward the chosen optimization replaces with one that calls
apply_hypernetworks(shared.loaded_hypernetworks, context): each hypernetwork's (k, v) modules
for the context's last dimension, if it has them. On SDXL that is the text context (CLIP-L ⊕
bigG: 2048 wide, 64 + 128 = 192 on the tiny model) in attn2 and the block's own width in attn1
(640, 1280; tiny: 64, 128). An SD1 hypernetwork (modules for 768, 320, 640, 1280, A1111's default
sizes) thus changes SDXL's self-attention at 640 and 1280 and nothing else; one with 768 only
changes nothing.

Files (restated Hypernetwork.save, hypernet_ref.py), in nets/:
  * hn_xl: widths 192, 64 and 128 (every attention of the tiny SDXL), 1-0.125-1 (narrow: small
    files), relu, layer norm, dropout structure;
  * hn_xl_ctx: width 192 only (the text context), 1-0.125-0.125-1, swish, no output activation;
and fixtures/hypernet/sd1/hn_default.pt (widths 64 and 32: the tiny SD1's, which on the tiny
SDXL meet the level-1 self-attention only, as an SD1 file's 640/1280 modules do on SDXL).

e2e.safetensors: make_sdxl_generate_fixtures' A1111-restated SDXL processing with the U-Net's
attentions hooked (hypernet_ref.hook_unet), tags stripped from the positive prompt.

Usage: make_sdxl_hypernet_fixtures.py [--bpe FILE]
"""
import argparse
import copy
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import hypernet_ref as H  # noqa: E402
import lora_ref as R  # noqa: E402
import make_sdxl_generate_fixtures as X  # noqa: E402
from make_hypernet_fixtures import make  # noqa: E402
from make_lora_fixtures import canonical_header  # noqa: E402

OUT = os.path.join(ROOT, "fixtures", "hypernet", "sdxl")
SD1 = os.path.join(ROOT, "fixtures", "hypernet", "sd1")
SIZE = 64

CASES = [
    dict(name="xl_txt2img_all_widths", sampler="Euler a", scheduler=None, rng="CPU", seed=11, steps=4,
         cfg=7.0, batch=1, width=64, height=64,
         prompt="a photo of a (cat:1.3) on a hill <hypernet:hn_xl:0.8>", negative_prompt="lowres, text",
         warned=[]),
    dict(name="xl_txt2img_context_and_sd1", sampler="DPM++ 2M", scheduler="karras", rng="NV", seed=42,
         steps=4, cfg=5.5, batch=1, width=64, height=96,
         prompt="<hypernet:hn_xl_ctx:1.2> a cat on a [blurry] hill <hypernet:hn_default:0.7>",
         negative_prompt="", warned=["hn_default"]),
    dict(name="xl_img2img_negative_multiplier", mode="img2img", strength=0.6, sampler="Euler", scheduler=None,
         rng="CPU", seed=21, steps=5, cfg=7.0, batch=1, width=128, height=128,
         prompt="a (portrait:1.2) of an astronaut <hypernet:hn_xl:-0.6>", negative_prompt="blurry", warned=[]),
]


def files():
    gen = torch.Generator().manual_seed(1718)
    d = os.path.join(OUT, "nets")
    make(os.path.join(d, "hn_xl.pt"), gen, 1.0, name="hn_xl", enable_sizes=[192, 64, 128],
         layer_structure=[1, 0.125, 1], activation_func="relu", add_layer_norm=True, use_dropout=True,
         last_layer_dropout=True, activate_output=True)
    make(os.path.join(d, "hn_xl_ctx.pt"), gen, 1.0, name="hn_xl_ctx", enable_sizes=[192],
         layer_structure=[1, 0.125, 0.125, 1], activation_func="swish", activate_output=False,
         dropout_structure=[0, 0.05, 0.15, 0])
    stems = {n[:-3]: os.path.join(d, n) for n in os.listdir(d) if n.endswith(".pt")}
    stems["hn_default"] = os.path.join(SD1, "hn_default.pt")
    return stems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", default=X.BPE)
    args = ap.parse_args()
    stems = files()
    from PIL import Image
    init = Image.open(os.path.join(ROOT, "fixtures", "generate", "init.png")).convert("RGB")
    unet, vae, encoders = X.load("sdxl", X.chunker(args.bpe))
    tensors, cases = {}, []
    for c in CASES:
        positive, tags = R.strip_extra_networks(c["prompt"])
        assert all(kind == "hypernet" for kind, _ in tags)
        names = [a[0] for _, a in tags]
        mults = [float(a[1]) if len(a) > 1 else 1.0 for _, a in tags]
        hns = H.load_hypernetworks([stems[n] for n in names], mults)
        run = dict(c, prompt=positive, negative=c["negative_prompt"])
        lat, img, _ = X.run(run, H.hook_unet(copy.deepcopy(unet), hns), vae, encoders, init)
        lat0, img0, _ = X.run(run, unet, vae, encoders, init)
        dlat = float((lat - lat0).abs().max() / lat0.abs().max())
        dimg = float((img.float() - img0.float()).abs().mean())
        print(f"{c['name']}: {positive!r}; vs none: latents max|d|/max {dlat:.3f}, pixels mean |d| {dimg:.2f}")
        tensors[c["name"] + "/latents"], tensors[c["name"] + "/image"] = lat, img
        cases.append(dict(c, encoded_prompt=positive, hypernetworks=names, multipliers=mults,
                          widths={n: sorted(h.layers) for n, h in zip(names, hns)},
                          latents_rel_change_vs_none=round(dlat, 4), image_mean_abs_change_vs_none=round(dimg, 3)))
    save_file(tensors, os.path.join(OUT, "e2e.safetensors"))
    canonical_header(os.path.join(OUT, "e2e.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_sdxl_hypernet_fixtures.py",
                   "reference": "A1111 v1.10.1 modules/hypernetworks/hypernetwork.py on SDXL (sgm CrossAttention, "
                                "restated in tools/reference/hypernet_ref.py and make_sdxl_generate_fixtures.py)",
                   "size": SIZE, "attention_widths": {"text": 192, "blocks": [64, 128]}, "e2e": cases}, f, indent=1)


if __name__ == "__main__":
    main()
