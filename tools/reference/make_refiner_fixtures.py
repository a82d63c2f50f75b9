#!/usr/bin/env python3
"""Refiner and hires-checkpoint reference for crates/sumi-pipeline/tests/refiner_parity.rs:
A1111 v1.10.1's model switches restated over the tiny models.

* apply_refiner (modules/sd_samplers_common.py), called at the start of every CFGDenoiser call:
  timestep = argmin(|inner_model.sigmas − max(sigma)|) (the model's 1000 sigmas, float32),
  completed = (999 − timestep) / 1000 (a float32 tensor); while completed < refiner_switch_at the
  model samples, then the refiner does for the rest of the run: its U-Net (and its ε/v wrapper)
  and the prompts' conditioning recomputed with its encoders (p.setup_conds(); an SDXL refiner
  has bigG only and the aesthetic score 6 / 2.5 in place of the target size). The step counter,
  the sigmas and the image generator go on. The batch is decoded with the refiner's VAE.
* SDXL: the tiny base and refiner of make_sdxl_fixtures.py, conditioning and sampling as
  make_sdxl_generate_fixtures.py restates them.
* SD1: the tiny SD1 model refined by the tiny SD2-v model (another checkpoint with its own
  weights, text encoder and v prediction; A1111 accepts any checkpoint as the refiner), as
  make_generate_fixtures.py restates SD1 and SD2-v sampling.
* Hires fix (StableDiffusionProcessingTxt2Img.sample: reload_model_weights(hr_checkpoint_info)
  before sample_hr_pass): with `hr_checkpoint` the second pass samples and decodes with that
  model and its conditioning of the hires prompts; with a refiner, A1111's default
  hires_fix_refiner_pass "second pass" keeps the first pass on the model and switches in the
  second pass (whose img2img sigmas start part way: completed = (999 − t) / 1000 there too).
  The second pass is make_hires_fixtures.py's (Latent upscale, exact steps).

Usage: make_refiner_fixtures.py [--bpe FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch

try:  # k_diffusion imports clip-anytorch, which needs pkg_resources; unused here
    import clip  # noqa: F401
except ImportError:
    sys.modules["clip"] = types.ModuleType("clip")
from k_diffusion import external, sampling as K
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import make_generate_fixtures as G  # noqa: E402
import make_sdxl_generate_fixtures as X  # noqa: E402
from make_prompt_fixtures import make_chunker  # noqa: E402
from make_sdxl_conditioning_fixtures import Encoder, conditioner, prompt_parser  # noqa: E402
from make_sdxl_fixtures import build as build_sdxl  # noqa: E402
from sampling_a1111_fixtures import ImageRNG  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
OUT = os.path.join(ROOT, "fixtures", "refiner")
PROMPT, NEGATIVE = G.PROMPT, G.NEGATIVE
CASES = [
    dict(name="sdxl_euler_a_cpu_batch2", family="sdxl", sampler="Euler a", scheduler=None, rng="CPU", seed=31,
         steps=6, cfg=7.0, batch=2, width=96, height=64, switch_at=0.5,
         prompt="a photo of a (cat:1.3) on a hill", negative="lowres, text"),
    dict(name="sdxl_dpmpp_2m_karras_empty_negative", family="sdxl", sampler="DPM++ 2M", scheduler="karras",
         rng="NV", seed=32, steps=5, cfg=5.5, batch=1, width=64, height=64, switch_at=0.8,
         prompt="a cat on a hill", negative=""),
    dict(name="sdxl_img2img_euler_cpu", family="sdxl", mode="img2img", strength=0.6, sampler="Euler",
         scheduler=None, rng="CPU", seed=33, steps=6, cfg=7.0, batch=1, width=128, height=128, switch_at=0.7,
         prompt="a (portrait:1.2) of an astronaut", negative="blurry"),
    dict(name="sd1_sd2v_euler_a_cpu_batch2", family="sd1", sampler="Euler a", scheduler=None, rng="CPU", seed=34,
         steps=6, cfg=7.0, batch=2, width=128, height=128, switch_at=0.6),
    dict(name="sd1_sd2v_dpmpp_2m_karras_nv", family="sd1", sampler="DPM++ 2M", scheduler="karras", rng="NV",
         seed=35, steps=5, cfg=6.0, batch=1, width=128, height=128, switch_at=0.9),
    # hires fix on SD1 (Latent 1.5x, strength 0.6): the second pass on the SD2-v checkpoint
    dict(name="sd1_hires_hr_checkpoint_sd2v", family="sd1", hires="hr_checkpoint", sampler="Euler", scheduler=None,
         rng="CPU", seed=36, steps=4, cfg=7.0, batch=1, width=128, height=128, hr_scale=1.5, strength=0.6),
    # hires fix with the refiner: the first pass on SD1, the second switching to SD2-v at 0.6
    dict(name="sd1_hires_refiner_second_pass", family="sd1", hires="refiner", sampler="Euler a", scheduler=None,
         rng="CPU", seed=37, steps=4, cfg=7.0, batch=1, width=128, height=128, hr_scale=1.5, strength=0.6,
         switch_at=0.6),
]


class Switching:
    """A1111's CFGDenoiser with apply_refiner: `base` until the run is past `switch_at`, then
    `refiner` (each a CFG denoiser over its own model and conditioning)."""

    def __init__(self, base, base_inner, refiner, switch_at):
        self.base, self.inner, self.refiner, self.switch_at = base, base_inner, refiner, switch_at
        self.step, self.switched_at = 0, None

    def __call__(self, x, sigma, **kw):
        if self.refiner is not None and self.switched_at is None:
            timestep = torch.argmin(torch.abs(self.inner.sigmas - torch.max(sigma)))
            completed = (999 - timestep) / 1000
            if not completed < self.switch_at:
                self.switched_at = self.step
        self.step += 1
        return (self.base if self.switched_at is None else self.refiner)(x, sigma)


def sample(den, x, sigmas, sampler, rng):
    if sampler == "Euler a":
        return K.sample_euler_ancestral(den, x, sigmas, noise_sampler=lambda s, sn: rng.next(), disable=True)
    if sampler == "Euler":
        return K.sample_euler(den, x, sigmas, disable=True)
    if sampler == "DPM++ 2M":
        return K.sample_dpmpp_2m(den, x, sigmas, disable=True)
    raise ValueError(sampler)


def sigmas_for(inner, scheduler, steps):
    if scheduler == "karras":
        return K.get_sigmas_karras(steps, inner.sigmas[0].item(), inner.sigmas[-1].item())
    return inner.get_sigmas(steps)


def to_uint8(img):
    img = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)
    return (255.0 * img.permute(0, 2, 3, 1).numpy()).astype(np.uint8)


def sdxl_encode(encoders, text, negative, width, height, refiner):
    if refiner:  # original size, crop top/left, aesthetic score (A1111's options: 6, 2.5)
        values = [height, width, 0, 0, 2.5 if negative else 6.0]
    else:
        values = [height, width, 0, 0, height, width]
    ctx, vec = conditioner(encoders, [text], values, negative and text == "")
    return {"crossattn": ctx, "vector": vec, "values": torch.tensor([values], dtype=torch.float32)}


def run_sdxl(c, models, init_image):
    (bu, bv, benc), (ru, rv, renc) = models
    w, h = c["width"], c["height"]
    binner = external.CompVisDenoiser(X.LDM(bu))
    rinner = external.CompVisDenoiser(X.LDM(ru))
    with torch.no_grad():
        base = X.CFGDenoiser(binner, sdxl_encode(benc, c["prompt"], False, w, h, False),
                             sdxl_encode(benc, c["negative"], True, w, h, False), c["cfg"])
        ref = X.CFGDenoiser(rinner, sdxl_encode(renc, c["prompt"], False, w, h, True),
                            sdxl_encode(renc, c["negative"], True, w, h, True), c["cfg"])
        seeds = [c["seed"] + i for i in range(c["batch"])]
        rng = ImageRNG(c["rng"], (4, h // 8, w // 8), seeds)
        steps = c["steps"]
        sigmas = sigmas_for(binner, c["scheduler"], steps)
        noise = rng.next()
        if c.get("mode") == "img2img":
            x0 = torch.from_numpy(np.asarray(init_image).astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
            init = bv.encode(x0).latent_dist.mean * X.SCALE
            t_enc = int(min(c["strength"], 0.999) * steps)
            sigmas = sigmas[steps - t_enc - 1:]
            x = init + noise * sigmas[0]
        else:
            x = noise * sigmas[0]
        den = Switching(base, binner, ref, c["switch_at"])
        out = sample(den, x, sigmas, c["sampler"], rng)
        assert den.switched_at is not None, c["name"]
        img = to_uint8(rv.decode(out / X.SCALE).sample)
    return out.contiguous(), torch.from_numpy(img).contiguous(), den.switched_at


def sd_model(arch, tok1, tok2):
    if arch not in G._MODELS:
        G._MODELS[arch] = G.build(arch, G.ARCH_SEED[arch])
    unet, vae, te = G._MODELS[arch]
    v = arch == "sd2-v"
    inner = (external.CompVisVDenoiser if v else external.CompVisDenoiser)(G.LDM(unet))
    tok = tok2 if v else tok1
    return inner, vae, lambda text: G.encode(te, tok, text, v)


def run_sd1(c, tok1, tok2):
    binner, bvae, benc = sd_model("sd1", tok1, tok2)
    rinner, rvae, renc = sd_model("sd2-v", tok1, tok2)
    hires = c.get("hires")
    with torch.no_grad():
        base = G.CFGDenoiser(binner, benc(PROMPT), benc(NEGATIVE), c["cfg"])
        ref = G.CFGDenoiser(rinner, renc(PROMPT), renc(NEGATIVE), c["cfg"])
        seeds = [c["seed"] + i for i in range(c["batch"])]
        shape = (4, c["height"] // 8, c["width"] // 8)
        rng = ImageRNG(c["rng"], shape, seeds)
        sigmas = sigmas_for(binner, c["scheduler"], c["steps"])
        x = rng.next() * sigmas[0]
        # the first pass: with the hires fix the refiner waits for the second pass (A1111's default)
        den = Switching(base, binner, None if hires else ref, c.get("switch_at"))
        out = sample(den, x, sigmas, c["sampler"], rng)
        switched = den.switched_at
        vae = bvae if switched is None else rvae
        if hires:
            tw, th = int(c["width"] * c["hr_scale"]), int(c["height"] * c["hr_scale"])
            samples = torch.nn.functional.interpolate(out, size=(th // 8, tw // 8), mode="bilinear", antialias=False)
            rng = ImageRNG(c["rng"], tuple(samples.shape[1:]), seeds)
            noise = rng.next()
            steps = c["steps"]
            total = int(steps / min(c["strength"], 0.999))
            t_enc = steps - 1
            if hires == "hr_checkpoint":  # the second pass on SD2-v, its conditioning
                sig = sigmas_for(rinner, c["scheduler"], total)[total - t_enc - 1:]
                den = Switching(ref, rinner, None, None)
                vae = rvae
            else:
                sig = sigmas_for(binner, c["scheduler"], total)[total - t_enc - 1:]
                den = Switching(base, binner, ref, c["switch_at"])
            out = sample(den, samples + noise * sig[0], sig, c["sampler"], rng)
            switched = den.switched_at
            if hires == "refiner":
                assert switched is not None, c["name"]
                vae = rvae
        else:
            assert switched is not None, c["name"]
        img = to_uint8(vae.decode(out / 0.18215).sample)
    return out.contiguous(), torch.from_numpy(img).contiguous(), switched


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", default=os.path.join(ROOT, "..", "shared", "data", "clip", "bpe_simple_vocab_16e6.txt.gz"))
    args = ap.parse_args()
    from PIL import Image
    from transformers import CLIPTokenizer
    tmp = tempfile.mkdtemp()
    toks = {}
    for pad in ["sd1", "sd2"]:
        d = os.path.join(tmp, pad)
        subprocess.run([sys.executable, os.path.join(HERE, "make_clip_tokenizer.py"), args.bpe, d, "--pad", pad],
                       check=True, capture_output=True)
        toks[pad] = CLIPTokenizer.from_pretrained(d)
    tokenize_line = make_chunker(prompt_parser(), toks["sd1"], [])
    init = Image.open(os.path.join(ROOT, "fixtures", "generate", "init.png")).convert("RGB")
    sdxl = None
    tensors, switched = {}, {}
    for c in CASES:
        if c["family"] == "sdxl":
            if sdxl is None:
                bu, bv, b1, b2 = build_sdxl("sdxl")
                ru, rv, _, r2 = build_sdxl("sdxl-refiner")
                sdxl = ((bu, bv, [Encoder(b1, False, tokenize_line), Encoder(b2, True, tokenize_line)]),
                        (ru, rv, [Encoder(r2, True, tokenize_line)]))
            lat, img, at = run_sdxl(c, sdxl, init)
        else:
            lat, img, at = run_sd1(c, toks["sd1"], toks["sd2"])
        tensors[c["name"] + "/latents"], tensors[c["name"] + "/image"] = lat, img
        switched[c["name"]] = at
        print(c["name"], "switched at call", at, float(lat.std()), img.float().mean().item())
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "reference.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_refiner_fixtures.py", "prompt": PROMPT, "negative": NEGATIVE,
                   "switched_at_call": switched, "cases": CASES}, f, indent=1)


if __name__ == "__main__":
    main()
