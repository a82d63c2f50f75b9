#!/usr/bin/env python3
"""End-to-end reference for crates/sumi-pipeline/tests/generate_parity.rs: txt2img and
img2img on the tiny SD1 and SD2-v models, following A1111's processing for k-diffusion
samplers (restated from modules/processing.py, sd_samplers_kdiffusion.py, sd_samplers_cfg_
denoiser.py, rng.py): one generator per image (seed + i), the first draw is the initial noise,
later draws are the samplers' noise; DPM++ SDE's Brownian tree spans the full schedule and
draws from the same source; img2img runs the last t_enc + 1 sigmas of the schedule from the
VAE posterior *mean* (Sumi's documented choice: A1111 samples it from an unseeded generator)
plus noise · sigma; CFG with conds first and unconds last, combined as uncond + cfg·(cond −
uncond); decode, (x + 1)/2 clamped, × 255, truncated to uint8. Prompts are plain (no emphasis):
A1111's conditioning is then the text encoder's output on [BOS] ids [EOS] padding (SD1 pads
with EOS, reads the last layer; SD2 pads with 0 and reads the penultimate layer through the
final layer norm).

Usage: make_generate_fixtures.py TOKENIZER_SD1_DIR TOKENIZER_SD2_DIR OUT_DIR
  (tokenizer dirs from make_clip_tokenizer.py --pad sd1 / --pad sd2)
"""
import json
import os
import sys
import warnings

import numpy as np
import torch
import torchsde._brownian.brownian_interval as torchsde_bi
from k_diffusion import external, sampling as K
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from make_tiny_models import build  # noqa: E402
import a1111_unet  # noqa: E402
from sampling_a1111_fixtures import ImageRNG, randn_local  # noqa: E402
from sampling_schedule_fixtures import FakeLDM  # noqa: E402

# latents that are not multiples of 8 (img2img's 160x192 here; the hires and inpaint fixtures,
# which import this module, too) go through the U-Net as A1111's (modules/sd_hijack_unet.py)
a1111_unet.use(True)

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
ARCH_SEED = {"sd1": 100, "sd1-inpaint": 200, "sd2-v": 400}  # make_tiny_models' seeds (weights depend on names only)
CASES = [
    dict(name="sd1_txt2img_euler_a_cpu", arch="sd1", mode="txt2img", sampler="Euler a", scheduler=None,
         rng="CPU", seed=1234, steps=6, cfg=7.0, batch=2),
    dict(name="sd1_txt2img_dpmpp_2m_karras_nv", arch="sd1", mode="txt2img", sampler="DPM++ 2M", scheduler="karras",
         rng="NV", seed=42, steps=5, cfg=5.5, batch=1),
    dict(name="sd1_img2img_dpmpp_sde_karras_cpu", arch="sd1", mode="img2img", sampler="DPM++ SDE", scheduler="karras",
         rng="CPU", seed=7, steps=6, cfg=7.0, batch=2, strength=0.75),
    dict(name="sd2v_img2img_euler_nv", arch="sd2-v", mode="img2img", sampler="Euler", scheduler=None,
         rng="NV", seed=99, steps=5, cfg=6.0, batch=1, strength=0.3),
    dict(name="sd2v_txt2img_dpmpp_2m_karras_cpu", arch="sd2-v", mode="txt2img", sampler="DPM++ 2M", scheduler="karras",
         rng="CPU", seed=5, steps=4, cfg=7.0, batch=1),
    # inpainting checkpoint without a mask: mask of ones + latents of a blank image as c_concat
    dict(name="sd1inpaint_txt2img_euler_cpu", arch="sd1-inpaint", mode="txt2img", sampler="Euler", scheduler=None,
         rng="CPU", seed=11, steps=4, cfg=7.0, batch=2),
    # "Just resize (latent upscale)": encode at the source size, bilinear-resize the latent
    dict(name="sd1_img2img_latent_upscale_euler_a_cpu", arch="sd1", mode="img2img", sampler="Euler a", scheduler=None,
         rng="CPU", seed=3, steps=4, cfg=7.0, batch=1, strength=0.5, width=160, height=192, resize_mode=3),
]
# the acceptance matrix, latents only (pixels are checked on the cases above): both models,
# txt2img and img2img at strengths 0.3 / 0.75 / 1.0, four samplers, CPU and NV noise, batch 2
MATRIX = [
    dict(name=f"m_{arch}_{'img2img_' + str(s) if s else 'txt2img'}_{sampler.replace(' ', '').replace('+', 'p')}_{sched or 'auto'}_{rng}",
         arch=arch, mode="img2img" if s else "txt2img", sampler=sampler, scheduler=sched, rng=rng,
         seed=1000 + i, steps=5, cfg=7.0, batch=2, latents_only=True, **({"strength": s} if s else {}))
    for i, (arch, s, (sampler, sched), rng) in enumerate(
        (arch, s, ss, rng)
        for arch in ("sd1", "sd2-v")
        for s in (None, 0.3, 0.75, 1.0)
        for ss in (("Euler", None), ("Euler a", None), ("DPM++ 2M", "karras"), ("DPM++ SDE", "karras"))
        for rng in ("CPU", "NV"))
]
# A1111's timestep samplers (sd_samplers_timesteps): DDIM (eta 0) and PLMS over CFG on ε
CASES += [
    dict(name=f"sd1_{mode}_{sampler.lower()}_cpu", arch="sd1", mode=mode, sampler=sampler, scheduler=None,
         rng="CPU", seed=21, steps=6, cfg=7.0, batch=2, **({"strength": 0.6} if mode == "img2img" else {}))
    for sampler in ("DDIM", "PLMS") for mode in ("txt2img", "img2img")
]
PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
SIZE = 128


class LDM:
    """What k-diffusion's CompVis wrappers need: alphas_cumprod and apply_model (with the
    inpainting models' c_concat)."""

    def __init__(self, unet):
        self.unet = unet
        self.alphas_cumprod = FakeLDM().alphas_cumprod

    def apply_model(self, x, t, cond, c_concat=None):
        if c_concat is not None:
            x = torch.cat([x, c_concat], dim=1)
        return self.unet(x, t, encoder_hidden_states=cond).sample


class CFGDenoiser:
    """A1111's CFGDenoiser for one prompt without AND parts or schedules."""

    def __init__(self, inner, cond, uncond, cfg, image_cond=None):
        self.inner, self.cond, self.uncond, self.cfg = inner, cond, uncond, cfg
        self.image_cond = image_cond

    def __call__(self, x, sigma, **kw):
        b = x.shape[0]
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        cond_in = torch.cat([self.cond.expand(b, -1, -1), self.uncond.expand(b, -1, -1)])
        extra = {}
        if self.image_cond is not None:
            extra["c_concat"] = torch.cat([self.image_cond, self.image_cond])
        out = self.inner(x_in, sigma_in, cond=cond_in, **extra)
        den_cond, den_uncond = out[:b], out[b:]
        return den_uncond + (den_cond - den_uncond) * self.cfg


def encode(te, tok, text, sd2):
    ids = tok(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    if sd2:  # A1111 (open_clip): 0 after the first end token
        first_end = int((ids[0] == 49407).nonzero()[0])
        ids[0, first_end + 1:] = 0
        o = te(ids, output_hidden_states=True)
        return te.final_layer_norm(o.hidden_states[-2])
    return te(ids).last_hidden_state


def timestep_sampler(c, unet, cond, uncond, noise, init):
    """A1111's CompVisSampler: DDIM timesteps, x in the VP scale, CFG on ε at integer t."""
    from sampling_sampler_fixtures import ddim_a1111, plms_a1111
    ac = FakeLDM().alphas_cumprod
    steps = c["steps"]
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    if init is not None:
        t_enc = int(min(c["strength"], 0.999) * steps)
        a = ac[timesteps[t_enc]]
        x = init * torch.sqrt(a) + noise * torch.sqrt(1 - a)
        timesteps = timesteps[:t_enc]
    else:
        x = noise
    b = noise.shape[0]

    def eps_model(x, t):
        tt = torch.full((2 * b,), float(t))
        ctx = torch.cat([cond.expand(b, -1, -1), uncond.expand(b, -1, -1)])
        out = unet(torch.cat([x, x]), tt, encoder_hidden_states=ctx).sample
        e_c, e_u = out[:b], out[b:]
        return e_u + (e_c - e_u) * c["cfg"]

    if c["sampler"] == "DDIM":
        return ddim_a1111(eps_model, x, timesteps, ac, 0.0, lambda _: None)
    return plms_a1111(eps_model, x, timesteps, ac, lambda _: None)


def sigmas_for(inner, c, steps):
    if c["scheduler"] == "karras":
        return K.get_sigmas_karras(steps, inner.sigmas[0].item(), inner.sigmas[-1].item())
    return inner.get_sigmas(steps)


_MODELS = {}


def run(c, tok1, tok2, init_image):
    sd2 = c["arch"] == "sd2-v"
    if c["arch"] not in _MODELS:
        _MODELS[c["arch"]] = build(c["arch"], ARCH_SEED[c["arch"]])
    unet, vae, te = _MODELS[c["arch"]]
    inner = (external.CompVisVDenoiser if sd2 else external.CompVisDenoiser)(LDM(unet))
    tok = tok2 if sd2 else tok1
    with torch.no_grad():
        cond = encode(te, tok, PROMPT, sd2)
        uncond = encode(te, tok, NEGATIVE, sd2)
        seeds = [c["seed"] + i for i in range(c["batch"])]
        width, height = c.get("width", SIZE), c.get("height", SIZE)
        shape = (4, height // 8, width // 8)
        rng = ImageRNG(c["rng"], shape, seeds)
        steps = c["steps"]
        sigmas = sigmas_for(inner, c, steps)
        noise = rng.next()
        if c["mode"] == "img2img":
            x0 = torch.from_numpy(np.asarray(init_image).astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
            init = vae.encode(x0).latent_dist.mean * 0.18215
            if c.get("resize_mode") == 3:
                init = torch.nn.functional.interpolate(init, size=shape[1:], mode="bilinear")
            t_enc = int(min(c["strength"], 0.999) * steps)
            run_sigmas = sigmas[steps - t_enc - 1:]
            x = init + noise * run_sigmas[0]
        else:
            run_sigmas = sigmas
            x = noise * sigmas[0]
        image_cond = None
        if c["arch"] == "sd1-inpaint":
            blank = torch.zeros(1, 3, height, width)
            lat = vae.encode(blank).latent_dist.mean * 0.18215
            image_cond = torch.cat([torch.ones(1, 1, *shape[1:]), lat], dim=1).repeat(c["batch"], 1, 1, 1)
        den = CFGDenoiser(inner, cond, uncond, c["cfg"], image_cond)
        if c["sampler"] in ("DDIM", "PLMS"):
            out = timestep_sampler(c, unet, cond, uncond, noise, init if c["mode"] == "img2img" else None)
            img = vae.decode(out / 0.18215).sample
            img = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)
            img = (255.0 * img.permute(0, 2, 3, 1).numpy()).astype(np.uint8)
            return out.contiguous(), torch.from_numpy(img).contiguous()
        if c["sampler"] == "DPM++ SDE":
            torchsde_bi._randn = lambda size, dtype, device, seed: randn_local(c["rng"], seed, size).to(dtype)
            ns = K.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)
            out = K.sample_dpmpp_sde(den, x, run_sigmas, noise_sampler=ns, disable=True)
        elif c["sampler"] == "Euler a":
            out = K.sample_euler_ancestral(den, x, run_sigmas, noise_sampler=lambda s, sn: rng.next(), disable=True)
        elif c["sampler"] == "Euler":
            out = K.sample_euler(den, x, run_sigmas, disable=True)
        elif c["sampler"] == "DPM++ 2M":
            out = K.sample_dpmpp_2m(den, x, run_sigmas, disable=True)
        else:
            raise ValueError(c["sampler"])
        img = vae.decode(out / 0.18215).sample
        img = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)
        img = (255.0 * img.permute(0, 2, 3, 1).numpy()).astype(np.uint8)
    return out.contiguous(), torch.from_numpy(img).contiguous()


def main():
    tok1 = CLIPTokenizer.from_pretrained(sys.argv[1])
    tok2 = CLIPTokenizer.from_pretrained(sys.argv[2])
    out = sys.argv[3]
    os.makedirs(out, exist_ok=True)
    from skimage import data
    init = Image.fromarray(data.astronaut()).resize((SIZE, SIZE), Image.LANCZOS)
    init.save(os.path.join(out, "init.png"))
    init = Image.open(os.path.join(out, "init.png")).convert("RGB")
    tensors = {}
    for c in CASES + MATRIX:
        lat, img = run(c, tok1, tok2, init)
        tensors[c["name"] + "/latents"] = lat
        if not c.get("latents_only"):
            tensors[c["name"] + "/image"] = img
        print(c["name"], float(lat.std()), img.float().mean().item())
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative_prompt": NEGATIVE, "size": SIZE, "cases": CASES + MATRIX}, f, indent=1)


if __name__ == "__main__":
    main()
