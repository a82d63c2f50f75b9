#!/usr/bin/env python3
"""Hypernetwork fixtures (fixtures/hypernet/), against A1111 v1.10.1's hypernetworks restated in
hypernet_ref.py:

1. math/: one small file per activation function A1111 accepts (width 8, layer norm on every other
   file, activate_output on), written by Hypernetwork.save as A1111 writes them, and math.safetensors:
   "<stem>/x" (an input [2, 3, 8]) and "<stem>/k", "<stem>/v" (what the file's modules make of it at
   multiplier 0.7, A1111's HypernetworkModule.forward), plus "chain/*": three files applied in order
   (apply_hypernetworks) with multipliers 1.3, -0.4, 0.9, on width 8 and on a width only one of them has;
2. sd1/: files for the tiny SD1 and SD2-v models (all their attention widths are 64: text context and
   blocks): the default structure, relu + layer norm + dropout in a subfolder, swish 1-2-2-1 with an
   explicit dropout structure, an old-format file (linear1/linear2 keys, no settings), a file whose only
   width (32) matches no layer, a file that is not a torch archive;
3. e2e.safetensors: end-to-end renders (make_generate_fixtures' A1111-restated sampling) with the
   hypernetworks on every attention's to_k/to_v context, tags stripped from the positive prompt only.

Usage: make_hypernet_fixtures.py BPE_FILE [OUT_DIR]
"""
import copy
import json
import logging
import os
import sys
import tempfile
import warnings
from collections import OrderedDict

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import hypernet_ref as H  # noqa: E402
import lora_ref as R  # noqa: E402
from make_lora_fixtures import canonical_header, tokenizers  # noqa: E402
from make_tiny_models import build  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(2)
ROOT = os.path.dirname(os.path.dirname(HERE))
ARCH_SEED = {"sd1": 100, "sd2-v": 400}  # make_tiny_models' seeds

# every name of A1111's activation_dict that builds without arguments and acts elementwise
MATH_ACTIVATIONS = ["linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "rrelu", "hardtanh",
                    "relu6", "hardsigmoid", "silu", "mish", "celu", "selu", "gelu", "hardshrink", "logsigmoid",
                    "softplus", "softshrink", "prelu", "softsign", "tanhshrink", "hardswish"]


def randomize(hn, gen, gain):
    """Weights that change the context visibly (A1111's Normal init, std 0.01, barely does)."""
    with torch.no_grad():
        for pair in hn.layers.values():
            for m in pair:
                for layer in m.linear:
                    if isinstance(layer, torch.nn.Linear):
                        fan_in = layer.weight.shape[1]
                        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * gain / fan_in ** 0.5)
                        layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)
                    elif isinstance(layer, torch.nn.LayerNorm):
                        layer.weight.copy_(1 + torch.randn(layer.weight.shape, generator=gen) * 0.2)
                        layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.2)
                    elif isinstance(layer, torch.nn.PReLU):
                        layer.weight.copy_(torch.tensor([0.1]) + torch.rand(1, generator=gen) * 0.3)
    return hn


def make(path, gen, gain, **kw):
    hn = H.Hypernetwork(**kw)
    randomize(hn, gen, gain)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    hn.save(path)
    return path


def math_fixtures(out):
    gen = torch.Generator().manual_seed(15)
    d = os.path.join(out, "math")
    tensors, files = {}, {}
    for i, act in enumerate(MATH_ACTIVATIONS):
        stem = f"act_{act}"
        path = make(os.path.join(d, stem + ".pt"), gen, 1.5, name=stem, enable_sizes=[8],
                    layer_structure=[1, 2, 1], activation_func=act, add_layer_norm=i % 2 == 1,
                    activate_output=True)
        hn = H.Hypernetwork().load(path).set_multiplier(0.7)
        x = torch.randn(2, 3, 8, generator=gen) * 2
        k, v = H.apply_hypernetworks([hn], x)
        tensors.update({f"{stem}/x": x, f"{stem}/k": k.contiguous(), f"{stem}/v": v.contiguous()})
        files[stem] = dict(activation=act, layer_norm=i % 2 == 1)
    # softmax (dim=None: across the batch for 3-d input) is in A1111's list; Sumi refuses it
    make(os.path.join(d, "refused", "act_softmax.pt"), gen, 1.0, name="act_softmax", enable_sizes=[8],
         layer_structure=[1, 2, 1], activation_func="softmax", activate_output=True)
    # a chain: three files in order, one of them also with width 12
    chain = [make(os.path.join(d, "chain", f"chain{j}.pt"), gen, 1.0, name=f"chain{j}", enable_sizes=sizes,
                  layer_structure=ls, activation_func=act, add_layer_norm=ln, use_dropout=True,
                  last_layer_dropout=lld)
             for j, (sizes, ls, act, ln, lld) in enumerate([
                 ([8, 12], [1, 2, 1], "relu", True, True),
                 ([8], [1, 1.5, 2, 1], "tanh", False, False),
                 ([8], [1, 0.5, 1], "swish", True, True)])]
    mults = [1.3, -0.4, 0.9]
    hns = H.load_hypernetworks(chain, mults)
    for w in (8, 12):
        x = torch.randn(2, 4, w, generator=gen)
        k, v = H.apply_hypernetworks(hns, x)
        tensors.update({f"chain/{w}/x": x, f"chain/{w}/k": k.contiguous(), f"chain/{w}/v": v.contiguous()})
    save_file(tensors, os.path.join(d, "math.safetensors"))
    canonical_header(os.path.join(d, "math.safetensors"))
    return files, dict(files=[os.path.relpath(p, d) for p in chain], multipliers=mults)


def model_files(out):
    gen = torch.Generator().manual_seed(16)
    d = os.path.join(out, "sd1")
    make(os.path.join(d, "hn_default.pt"), gen, 0.8, name="hn_default", enable_sizes=[64, 32],
         layer_structure=[1, 2, 1], activation_func="linear")
    make(os.path.join(d, "sub", "hn_relu_ln.pt"), gen, 1.0, name="hn_relu_ln", enable_sizes=[64],
         layer_structure=[1, 1.5, 1], activation_func="relu", add_layer_norm=True, use_dropout=True,
         last_layer_dropout=True, activate_output=True)
    make(os.path.join(d, "hn_swish.pt"), gen, 1.0, name="hn_swish", enable_sizes=[64],
         layer_structure=[1, 2, 2, 1], activation_func="swish", activate_output=False,
         dropout_structure=[0, 0.05, 0.15, 0])
    make(os.path.join(d, "hn_w32.pt"), gen, 1.0, name="hn_w32", enable_sizes=[32],
         layer_structure=[1, 2, 1], activation_func="relu")
    # the first hypernetworks (2022): only the modules, named linear1/linear2
    old = {}
    for w in (64,):
        pair = []
        for _ in range(2):
            pair.append(OrderedDict([
                ("linear1.weight", torch.randn(2 * w, w, generator=gen) * 0.8 / w ** 0.5),
                ("linear1.bias", torch.randn(2 * w, generator=gen) * 0.1),
                ("linear2.weight", torch.randn(w, 2 * w, generator=gen) * 0.8 / (2 * w) ** 0.5),
                ("linear2.bias", torch.randn(w, generator=gen) * 0.1)]))
        old[w] = pair
    torch.save(old, os.path.join(d, "hn_old.pt"))
    with open(os.path.join(d, "bad.pt"), "wb") as f:
        f.write(b"PK\x03\x04 this is not a torch archive")
    return d


E2E = [
    dict(name="e2e_sd1_txt2img_one", arch="sd1", mode="txt2img", sampler="Euler a", scheduler=None, rng="CPU",
         seed=1234, steps=6, cfg=7.0, batch=1,
         prompt="a photograph of an astronaut riding a horse <hypernet:hn_default:0.8>",
         negative_prompt="blurry, low quality"),
    dict(name="e2e_sd1_txt2img_three", arch="sd1", mode="txt2img", sampler="DPM++ 2M", scheduler="karras", rng="CPU",
         seed=99, steps=6, cfg=7.0, batch=1,
         prompt="<hypernet:hn_relu_ln:1.2> a photograph of an astronaut <hypernet:hn_swish> riding a horse <hypernet:hn_old:0.5>",
         negative_prompt="blurry, <hypernet:hn_default:1>, low quality"),
    dict(name="e2e_sd1_img2img_negative_multiplier", arch="sd1", mode="img2img", sampler="Euler", scheduler=None,
         rng="CPU", seed=7, steps=6, cfg=7.0, batch=1, strength=0.6,
         prompt="a photograph of an astronaut riding a horse <hypernet:hn_swish:-0.7>",
         negative_prompt="blurry, low quality"),
    dict(name="e2e_sd2v_txt2img", arch="sd2-v", mode="txt2img", sampler="Euler", scheduler=None, rng="CPU",
         seed=5, steps=5, cfg=7.0, batch=1,
         prompt="a photograph of an astronaut <hypernet:hn_default:1.5> riding a horse",
         negative_prompt="blurry, low quality"),
]


def run_e2e(out, folder, bpe):
    import make_generate_fixtures as G
    from PIL import Image
    init = Image.open(os.path.join(ROOT, "fixtures/generate/init.png")).convert("RGB")
    stems = {}
    for base, _, names in os.walk(folder):
        for n in names:
            if n.endswith(".pt"):
                stems[n[:-3]] = os.path.join(base, n)
    models = {a: build(a, s) for a, s in ARCH_SEED.items()}
    tensors, cases = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        tok = tokenizers(bpe, tmp)
        for c in E2E:
            unet, vae, te = models[c["arch"]]
            positive, tags = R.strip_extra_networks(c["prompt"])
            assert all(kind == "hypernet" for kind, _ in tags)
            paths = [stems[a[0]] for _, a in tags]
            mults = [float(a[1]) if len(a) > 1 else 1.0 for _, a in tags]
            hns = H.load_hypernetworks(paths, mults)
            G.PROMPT, G.NEGATIVE = positive, c["negative_prompt"]
            G._MODELS[c["arch"]] = (H.hook_unet(copy.deepcopy(unet), hns), vae, te)
            lat, img = G.run(c, tok["sd1"], tok["sd2"], init)
            G._MODELS[c["arch"]] = (unet, vae, te)
            lat0, img0 = G.run(c, tok["sd1"], tok["sd2"], init)
            dlat = float((lat - lat0).abs().max() / lat0.abs().max())
            diff = (img.float() - img0.float()).abs()
            print(f"{c['name']}: {positive!r}; vs none: latents max|d|/max {dlat:.3f}, "
                  f"pixels mean |d| {float(diff.mean()):.2f}")
            tensors[c["name"] + "/latents"] = lat
            tensors[c["name"] + "/image"] = img
            cases.append(dict(c, encoded_prompt=positive, hypernetworks=[os.path.relpath(p, folder) for p in paths],
                              multipliers=mults, latents_rel_change_vs_none=round(dlat, 4),
                              image_mean_abs_change_vs_none=round(float(diff.mean()), 3)))
    save_file(tensors, os.path.join(out, "e2e.safetensors"))
    canonical_header(os.path.join(out, "e2e.safetensors"))
    return cases


def main():
    bpe = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "fixtures/hypernet")
    os.makedirs(out, exist_ok=True)
    math_files, chain = math_fixtures(out)
    folder = model_files(out)
    e2e = run_e2e(out, folder, bpe)
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_hypernet_fixtures.py",
                   "reference": "A1111 v1.10.1 modules/hypernetworks/hypernetwork.py (restated in tools/reference/hypernet_ref.py)",
                   "size": 128, "math": math_files, "chain": chain, "e2e": e2e}, f, indent=1)


if __name__ == "__main__":
    main()
