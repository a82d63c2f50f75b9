#!/usr/bin/env python3
"""End-to-end SDXL txt2img reference for crates/sumi-pipeline/tests/sdxl_generate.rs, restating
A1111 v1.10.1's SDXL processing on the tiny SDXL base of make_sdxl_fixtures.py (same
synthesised weights; the test rebuilds them from fixtures/tiny/sdxl/manifest.json):

  * conditioning: sd_models_xl.get_learned_conditioning as make_sdxl_conditioning_fixtures.py
    restates it (A1111's own prompt_parser for emphasis, both encoders chunked, CLIP-L ⊕ bigG
    context, pooled ⊕ Fourier(original size, crop 0 0, target size) vector, an all-empty
    negative prompt zeroed); the sizes are the request's (p.width, p.height);
  * sampling: k-diffusion's CompVisDenoiser over the SGM model (SDXL's discretisation is SD's
    scaled-linear 0.00085..0.012 schedule), A1111's CFGDenoiser (conds of every image first,
    unconds last, one call when the token counts agree, separate calls otherwise; the dict
    cond's crossattn and vector travel together), A1111's ImageRNG (one generator per image,
    seed + i; first draw the initial noise, later draws Euler a's noise), x = noise · σ₀;
  * decode: latents / 0.13025 (SDXL's scale factor, no shift) through the VAE, (x + 1)/2
    clamped, × 255, truncated to uint8.

The U-Net is diffusers' UNet2DConditionModel with `text_time` addition, given the pooled part
of the vector as text_embeds and the size values as time_ids (its add_time_proj is SGM's
cos-first timestep_embedding; make_sdxl_fixtures.py checks it against the SGM layout).

Usage: make_sdxl_generate_fixtures.py [--bpe FILE]
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

try:  # k_diffusion imports clip-anytorch, which needs pkg_resources (setuptools < 81); unused here
    import clip  # noqa: F401
except ImportError:
    sys.modules["clip"] = types.ModuleType("clip")
from k_diffusion import external, sampling as K
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_prompt_fixtures import make_chunker  # noqa: E402
from make_sdxl_conditioning_fixtures import Encoder, conditioner, prompt_parser  # noqa: E402
from make_sdxl_fixtures import G_HID, build  # noqa: E402
from sampling_a1111_fixtures import ImageRNG  # noqa: E402
from sampling_schedule_fixtures import FakeLDM  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
OUT = os.path.join(ROOT, "fixtures", "sdxl_generate")
SCALE = 0.13025
LONG = ", ".join(["(red flowers:1.1)", "a tall tree", "[fog]", "mountains far away"] * 6) + ", sketch"
CASES = [
    dict(name="euler_a_cpu_batch2", sampler="Euler a", scheduler=None, rng="CPU", seed=1234, steps=5,
         cfg=7.0, batch=2, width=96, height=64, prompt="a photo of a (cat:1.3) on a [blurry] hill",
         negative="lowres, (bad hands:1.2), text"),
    dict(name="dpmpp_2m_karras_nv_long", sampler="DPM++ 2M", scheduler="karras", rng="NV", seed=42, steps=5,
         cfg=5.5, batch=1, width=64, height=96, prompt=LONG, negative=""),
    dict(name="euler_cpu_empty_negative_batch2", sampler="Euler", scheduler=None, rng="CPU", seed=7, steps=4,
         cfg=6.0, batch=2, width=64, height=64, prompt="a cat on a hill", negative=""),
    # img2img from fixtures/generate/init.png (128², no resize): the VAE posterior mean × 0.13025
    dict(name="img2img_euler_a_cpu", mode="img2img", strength=0.6, sampler="Euler a", scheduler=None, rng="CPU",
         seed=21, steps=5, cfg=7.0, batch=2, width=128, height=128, prompt="a (portrait:1.2) of an astronaut",
         negative="blurry"),
    # the 9-channel SDXL inpainting U-Net without a mask (A1111's txt2img_image_conditioning for
    # is_sdxl_inpaint: a mask of ones and the latents of a 0.5-grey picture)
    dict(name="inpaint_model_txt2img_dpmpp_2m_karras_cpu", arch="sdxl-inpaint", sampler="DPM++ 2M",
         scheduler="karras", rng="CPU", seed=5, steps=4, cfg=7.0, batch=2, width=96, height=64,
         prompt="a cat on a hill", negative="lowres"),
]


class LDM:
    """What k-diffusion's CompVis wrapper needs of A1111's SGM model: alphas_cumprod and
    apply_model with the dict cond."""

    def __init__(self, unet):
        self.unet = unet
        self.alphas_cumprod = FakeLDM().alphas_cumprod

    def apply_model(self, x, t, cond):
        ctx, vec, values = cond["crossattn"], cond["vector"], cond["values"]
        if "c_concat" in cond:  # sd_models_xl.apply_model for is_sdxl_inpaint
            x = torch.cat([x, cond["c_concat"]], dim=1)
        return self.unet(x, t, encoder_hidden_states=ctx,
                         added_cond_kwargs={"text_embeds": vec[:, :G_HID], "time_ids": values}).sample


def rows(c, n):
    return {k: v.expand(n, *v.shape[1:]) for k, v in c.items()}


def cat(a, b):
    return {k: torch.cat([a[k], b[k]]) for k in a}


class CFGDenoiser:
    """A1111's CFGDenoiser for one prompt without AND parts or schedules (dict conds; the
    inpainting model's c_concat rides in the dict, as A1111's make_condition_dict puts it)."""

    def __init__(self, inner, cond, uncond, cfg, image_cond=None):
        self.inner, self.cond, self.uncond, self.cfg = inner, cond, uncond, cfg
        self.image_cond = image_cond

    def __call__(self, x, sigma, **kw):
        b = x.shape[0]
        c, u = rows(self.cond, b), rows(self.uncond, b)
        if self.image_cond is not None:
            c, u = dict(c, c_concat=self.image_cond), dict(u, c_concat=self.image_cond)
        if c["crossattn"].shape[1] == u["crossattn"].shape[1]:
            out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=cat(c, u))
            den_cond, den_uncond = out[:b], out[b:]
        else:
            den_cond = self.inner(x, sigma, cond=c)
            den_uncond = self.inner(x, sigma, cond=u)
        return den_uncond + (den_cond - den_uncond) * self.cfg


def encode(encoders, text, negative, width, height):
    values = [height, width, 0, 0, height, width]
    zero = negative and text == ""
    ctx, vec = conditioner(encoders, [text], values, zero)
    return {"crossattn": ctx, "vector": vec, "values": torch.tensor([values], dtype=torch.float32)}


def run(c, unet, vae, encoders, init_image):
    inner = external.CompVisDenoiser(LDM(unet))
    with torch.no_grad():
        w, h = c["width"], c["height"]
        cond = encode(encoders, c["prompt"], False, w, h)
        uncond = encode(encoders, c["negative"], True, w, h)
        seeds = [c["seed"] + i for i in range(c["batch"])]
        rng = ImageRNG(c["rng"], (4, h // 8, w // 8), seeds)
        steps = c["steps"]
        if c["scheduler"] == "karras":
            sigmas = K.get_sigmas_karras(steps, inner.sigmas[0].item(), inner.sigmas[-1].item())
        else:
            sigmas = inner.get_sigmas(steps)
        noise = rng.next()
        if c.get("mode") == "img2img":
            x0 = torch.from_numpy(np.asarray(init_image).astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
            init = vae.encode(x0).latent_dist.mean * SCALE
            t_enc = int(min(c["strength"], 0.999) * steps)
            sigmas = sigmas[steps - t_enc - 1:]
            x = init + noise * sigmas[0]
        else:
            x = noise * sigmas[0]
        image_cond = None
        if c.get("arch") == "sdxl-inpaint":
            grey = torch.zeros(1, 3, h, w)  # 0.5 in [0, 1]
            lat = vae.encode(grey).latent_dist.mean * SCALE
            image_cond = torch.cat([torch.ones(1, 1, h // 8, w // 8), lat], dim=1).repeat(c["batch"], 1, 1, 1)
        den = CFGDenoiser(inner, cond, uncond, c["cfg"], image_cond)
        if c["sampler"] == "Euler a":
            out = K.sample_euler_ancestral(den, x, sigmas, noise_sampler=lambda s, sn: rng.next(), disable=True)
        elif c["sampler"] == "Euler":
            out = K.sample_euler(den, x, sigmas, disable=True)
        elif c["sampler"] == "DPM++ 2M":
            out = K.sample_dpmpp_2m(den, x, sigmas, disable=True)
        else:
            raise ValueError(c["sampler"])
        img = vae.decode(out / SCALE).sample
        img = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)
        img = (255.0 * img.permute(0, 2, 3, 1).numpy()).astype(np.uint8)
    return out.contiguous(), torch.from_numpy(img).contiguous(), cond["crossattn"].shape[1]


BPE = os.path.join(ROOT, "..", "shared", "data", "clip", "bpe_simple_vocab_16e6.txt.gz")


def chunker(bpe):
    """A1111's tokenize_line (its prompt_parser for emphasis) over the SD tokenizer made from `bpe`."""
    pp = prompt_parser()
    from transformers import CLIPTokenizer
    d = os.path.join(tempfile.mkdtemp(), "tok")
    subprocess.run([sys.executable, os.path.join(HERE, "make_clip_tokenizer.py"), bpe, d, "--pad", "sd1"],
                   check=True, capture_output=True)
    return make_chunker(pp, CLIPTokenizer.from_pretrained(d), [])


def load(arch, tokenize_line):
    """The tiny `arch` model: U-Net, VAE and its encoders as A1111's embedders."""
    unet, vae, te1, te2 = build(arch)
    return unet, vae, [Encoder(te1, False, tokenize_line), Encoder(te2, True, tokenize_line)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", default=BPE)
    args = ap.parse_args()
    tokenize_line = chunker(args.bpe)
    from PIL import Image
    init = Image.open(os.path.join(ROOT, "fixtures", "generate", "init.png")).convert("RGB")
    models = {}
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    for c in CASES:
        arch = c.get("arch", "sdxl")
        if arch not in models:
            models[arch] = load(arch, tokenize_line)
        lat, img, tokens = run(c, *models[arch], init)
        tensors[c["name"] + "/latents"], tensors[c["name"] + "/image"] = lat, img
        print(c["name"], tokens, float(lat.std()), img.float().mean().item())
    save_file(tensors, os.path.join(OUT, "reference.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_sdxl_generate_fixtures.py", "cases": CASES}, f, indent=1)


if __name__ == "__main__":
    main()
