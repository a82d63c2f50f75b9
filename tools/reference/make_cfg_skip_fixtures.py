#!/usr/bin/env python3
"""End-to-end reference for crates/sumi-pipeline/tests/cfg_skip_parity.rs: A1111 v1.10.1's two
ways of skipping the unconditional U-Net rows in its CFG denoiser
(modules/sd_samplers_cfg_denoiser.py, `CFGDenoiser.forward`), on the tiny SD1 and SD2-v models:

- "Ignore negative prompt during early sampling" (`skip_early_cond`, infotext `Skip Early CFG`):
  the uncond rows are skipped while `step / total_steps <= skip_early_cond`, where `step` counts
  denoiser calls (from 0) and `total_steps` is `sampler_config.total_steps(steps)` of the
  `steps` given to `launch_sampling` (txt2img: the steps; img2img: t_enc + 1), doubled for
  second-order samplers (Heun, DPM2, …).
- "Negative Guidance minimum sigma" (`s_min_uncond`, infotext `NGMS`; `s_min_uncond_all`,
  `NGMS all steps`): otherwise, skipped on odd calls (every call with `s_min_uncond_all`) when
  `s_min_uncond > 0` and `sigma[0] < s_min_uncond`. The timestep samplers (DDIM, PLMS, UniPC)
  hand their CFG denoiser the U-Net *timestep* where k-diffusion hands sigma, so there the
  timestep is compared.
- A skipped call runs the cond rows only and puts the cond prediction where the uncond one
  would be, so the combined prediction is the cond prediction itself.

Models, prompts, init image, ImageRNG and the VAE posterior mean are make_generate_fixtures.py's;
latents only. Each case records which skips fired (A1111 adds the infotext keys only then).

Usage: make_cfg_skip_fixtures.py TOKENIZER_SD1_DIR TOKENIZER_SD2_DIR OUT_DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from k_diffusion import external, sampling as K  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

import make_generate_fixtures as G  # noqa: E402
from sampling_a1111_fixtures import ImageRNG  # noqa: E402
from sampling_sampler_fixtures import ddim_a1111  # noqa: E402


def case(name, arch, mode, sampler, steps, seed, ngms=0.0, ngms_all=False, early=0.0, batch=2, rng="CPU"):
    c = dict(name=name, arch=arch, mode=mode, sampler=sampler, steps=steps, seed=seed, cfg=7.0,
             batch=batch, rng=rng, s_min_uncond=ngms, s_min_uncond_all=ngms_all, skip_early_cond=early)
    if mode == "img2img":
        c["strength"] = 0.75
    return c


CASES = [
    case("sd1_txt2img_euler_ngms", "sd1", "txt2img", "Euler", 8, 31, ngms=4.0),
    case("sd1_txt2img_euler_a_ngms_all", "sd1", "txt2img", "Euler a", 8, 32, ngms=2.5, ngms_all=True),
    case("sd1_txt2img_heun_early", "sd1", "txt2img", "Heun", 5, 33, early=0.3),
    case("sd1_img2img_euler_early", "sd1", "img2img", "Euler", 8, 34, early=0.5),
    # both set: the early skip wins while it holds, NGMS after
    case("sd1_txt2img_euler_both", "sd1", "txt2img", "Euler", 8, 35, ngms=6.0, early=0.25),
    # timestep samplers compare the timestep, not sigma. A1111's DDIM calls the U-Net at
    # timesteps[len - 1] … timesteps[1] (never timesteps[0] = 1): at 10 steps 901 … 101, none
    # under 15 (by sigma, < 15 from the first call, every call would skip); at 80 steps the
    # last call is at t = 13 and skips
    case("sd1_txt2img_ddim_ngms_all_unused", "sd1", "txt2img", "DDIM", 10, 36, ngms=15.0, ngms_all=True),
    case("sd1_txt2img_ddim_ngms_all", "sd1", "txt2img", "DDIM", 80, 39, ngms=15.0, ngms_all=True, batch=1),
    case("sd2v_txt2img_euler_ngms", "sd2-v", "txt2img", "Euler", 6, 37, ngms=3.0, rng="NV"),
    # neither fires: NGMS below every odd call's sigma
    case("sd1_txt2img_euler_ngms_unused", "sd1", "txt2img", "Euler", 4, 38, ngms=0.01),
]


class Skips:
    """A1111's decision per denoiser call, and what fired."""

    def __init__(self, c, total_steps):
        self.c, self.total, self.step = c, total_steps, 0
        self.fired = {"early": False, "ngms": False}

    def skip(self, sigma0):
        c = self.c
        if c["skip_early_cond"] != 0.0 and self.step / self.total <= c["skip_early_cond"]:
            self.fired["early"] = True
            return True
        if (self.step % 2 or c["s_min_uncond_all"]) and c["s_min_uncond"] > 0 and sigma0 < c["s_min_uncond"]:
            self.fired["ngms"] = True
            return True
        return False


class SkipCFG:
    """make_generate_fixtures.CFGDenoiser with A1111's uncond skip."""

    def __init__(self, inner, cond, uncond, cfg, skips):
        self.inner, self.cond, self.uncond, self.cfg, self.skips = inner, cond, uncond, cfg, skips

    def __call__(self, x, sigma, **kw):
        b = x.shape[0]
        skip = self.skips.skip(float(sigma[0]))
        if skip:
            out = self.inner(x, sigma, cond=self.cond.expand(b, -1, -1))
        else:
            out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]),
                             cond=torch.cat([self.cond.expand(b, -1, -1), self.uncond.expand(b, -1, -1)]))
        self.skips.step += 1
        if skip:
            return out
        den_cond, den_uncond = out[:b], out[b:]
        return den_uncond + (den_cond - den_uncond) * self.cfg


def ddim_run(c, unet, cond, uncond, noise, skips):
    ac = G.FakeLDM().alphas_cumprod
    steps = c["steps"]
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    b = noise.shape[0]

    def eps_model(x, t):
        skip = skips.skip(float(t))
        if skip:
            tt = torch.full((b,), float(t))
            out = unet(x, tt, encoder_hidden_states=cond.expand(b, -1, -1)).sample
        else:
            tt = torch.full((2 * b,), float(t))
            ctx = torch.cat([cond.expand(b, -1, -1), uncond.expand(b, -1, -1)])
            out = unet(torch.cat([x, x]), tt, encoder_hidden_states=ctx).sample
        skips.step += 1
        if skip:
            return out
        e_c, e_u = out[:b], out[b:]
        return e_u + (e_c - e_u) * c["cfg"]

    return ddim_a1111(eps_model, noise, timesteps, ac, 0.0, lambda _: None)


def run(c, tok1, tok2, init_image):
    v = c["arch"] == "sd2-v"
    if c["arch"] not in G._MODELS:
        G._MODELS[c["arch"]] = G.build(c["arch"], G.ARCH_SEED[c["arch"]])
    unet, vae, te = G._MODELS[c["arch"]]
    inner = (external.CompVisVDenoiser if v else external.CompVisDenoiser)(G.LDM(unet))
    tok = tok2 if v else tok1
    steps = c["steps"]
    with torch.no_grad():
        cond = G.encode(te, tok, G.PROMPT, v)
        uncond = G.encode(te, tok, G.NEGATIVE, v)
        seeds = [c["seed"] + i for i in range(c["batch"])]
        rng = ImageRNG(c["rng"], (4, G.SIZE // 8, G.SIZE // 8), seeds)
        noise = rng.next()
        if c["sampler"] == "DDIM":
            skips = Skips(c, steps)
            out = ddim_run(c, unet, cond, uncond, noise, skips)
        else:
            sigmas = inner.get_sigmas(steps)
            if c["mode"] == "img2img":
                x0 = torch.from_numpy(np.asarray(init_image).astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
                init = vae.encode(x0).latent_dist.mean * 0.18215
                t_enc = int(min(c["strength"], 0.999) * steps)
                run_sigmas = sigmas[steps - t_enc - 1:]
                x = init + noise * run_sigmas[0]
                launch = t_enc + 1
            else:
                run_sigmas = sigmas
                x = noise * sigmas[0]
                launch = steps
            skips = Skips(c, launch * 2 if c["sampler"] == "Heun" else launch)
            den = SkipCFG(inner, cond, uncond, c["cfg"], skips)
            if c["sampler"] == "Euler":
                out = K.sample_euler(den, x, run_sigmas, disable=True)
            elif c["sampler"] == "Euler a":
                out = K.sample_euler_ancestral(den, x, run_sigmas, noise_sampler=lambda s, sn: rng.next(),
                                               disable=True)
            elif c["sampler"] == "Heun":
                out = K.sample_heun(den, x, run_sigmas, disable=True)
            else:
                raise ValueError(c["sampler"])
        c["calls"] = skips.step
        c["fired_early"] = skips.fired["early"]
        c["fired_ngms"] = skips.fired["ngms"]
    return out


def main():
    tok1 = CLIPTokenizer.from_pretrained(sys.argv[1])
    tok2 = CLIPTokenizer.from_pretrained(sys.argv[2])
    out = sys.argv[3]
    os.makedirs(out, exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    init = Image.open(os.path.join(root, "fixtures/generate/init.png")).convert("RGB")
    tensors = {}
    for c in CASES:
        lat = run(c, tok1, tok2, init)
        tensors[c["name"] + "/latents"] = lat.contiguous()
        print(c["name"], float(lat.std()), c["calls"], c["fired_early"], c["fired_ngms"])
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"prompt": G.PROMPT, "negative_prompt": G.NEGATIVE, "size": G.SIZE, "cases": CASES}, f, indent=1)


if __name__ == "__main__":
    main()
