#!/usr/bin/env python3
"""End-to-end reference for crates/sumi-pipeline/tests/sampler_parity.rs: DPM fast, DPM
adaptive, Restart, DDIM CFG++ and UniPC through A1111 v1.10.1's txt2img / img2img on the tiny
models, latents only. Models, prompts, init image (fixtures/generate/init.png), CFG denoiser,
ImageRNG and the VAE posterior mean for img2img are make_generate_fixtures.py's.

How A1111 calls each (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py,
sd_samplers_timesteps_impl.py, sd_samplers_extra.py, sd_samplers_common.py):
- every `torch.randn_like` inside a sampler is TorchHijack's: the ImageRNG's next draw.
- DPM fast / adaptive (KDiffusionSampler): txt2img x = noise * sigmas[0] of the "Automatic"
  (uniform) schedule, sigma_min / sigma_max = model_wrap.sigmas[0] / [-1], n = steps;
  img2img sigma_sched = sigmas[steps - t_enc - 1:], x = init + noise * sigma_sched[0],
  sigma_min = sigma_sched[-2], sigma_max = sigma_sched[0], n = len(sigma_sched) - 1;
  eta = opts.eta_ancestral = 1 (both have `eta` in their signature), s_noise 1.
- Restart: restart_sampler (restated in sampling_extra_sampler_fixtures.py) on its default
  Karras schedule (txt2img: all of it; img2img: sigma_sched).
- DDIM CFG++ (CompVisSampler, CFGDenoiserTimesteps): DDIM timesteps, VP-scale x, the U-Net at
  the integer timestep on x itself, CFG on ε with cond_scale x 1/12.5, the direction term on
  the unconditional ε (last_noise_uncond); eta_ddim 0.
- UniPC (sd_samplers_timesteps_impl.unipc, UniPCCFG): NoiseScheduleVP('discrete'), bh1,
  multistep, time_uniform, order 3, lower_order_final; steps = len(timesteps) (img2img:
  t_enc, t_start = timesteps[t_enc - 1]/1000 + 1/1000). UniPCCFG.model feeds the CFG denoiser
  (hence the U-Net) x itself and the *float* timestep t_input = (t - 1/N) * 1000, computed in
  float32 on the continuous t; the data prediction is (x - σ_t ε) / α_t with the schedule's
  α_t, σ_t at t. A v model's ε is CompVisTimestepsVDenoiser's
  √ᾱ[int(t_input)] · v + √(1 − ᾱ[int(t_input)]) · x, ᾱ at the *truncated* timestep.
- UniPC inpainting (INPAINT_CASES): make_inpaint_fixtures.py's processing (Pillow 9.5.0,
  OpenCV; fixtures/inpaint/ inputs) with CFGDenoiserTimesteps' blend (mask_before_denoising):
  the U-Net sees init_latent · mask + nmask · x, UniPC keeps its own x for (x − σ_t ε)/α_t;
  after sampling samples · nmask + init_latent · mask.

Setup: Pillow 9.5.0 and OpenCV in tools/reference/.pil95 (see make_inpaint_fixtures.py).
Usage: make_sampler_e2e_fixtures.py TOKENIZER_SD1_DIR TOKENIZER_SD2_DIR OUT_DIR
  (tokenizer dirs from make_clip_tokenizer.py --pad sd1 / --pad sd2)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_inpaint_fixtures as I  # noqa: E402,I100 (first: it puts Pillow 9.5.0 on the path)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from k_diffusion import external, sampling as K  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

import make_generate_fixtures as G  # noqa: E402
from sampling_a1111_fixtures import ImageRNG  # noqa: E402
from sampling_extra_sampler_fixtures import ddim_cfgpp_a1111, restart_a1111  # noqa: E402
from sampling_unipc_ref import VP, unipc  # noqa: E402


def case(arch, mode, sampler, steps, seed, rng="CPU", batch=2, scheduler=None, cfg=7.0):
    name = f"{arch.replace('-', '')}_{mode}_{sampler.lower().replace(' ', '_').replace('+', 'p')}_{steps}_{rng.lower()}"
    c = dict(name=name, arch=arch, mode=mode, sampler=sampler, scheduler=scheduler, rng=rng, seed=seed,
             steps=steps, cfg=cfg, batch=batch)
    if mode == "img2img":
        c["strength"] = 0.75
    return c


CASES = [
    case("sd1", "txt2img", "DPM fast", 6, 61),
    case("sd1", "img2img", "DPM fast", 8, 62),
    # CFG 3: at CFG 7 DPM adaptive's step control turns a 1e-6 relative change of the U-Net's
    # output into 1.5e-5 / 2e-5 of the final latents (this reference against itself with its
    # U-Net outputs scaled by 1 + 1e-6 randn), beyond the 1e-5 any other float32 U-Net can be
    # held to; at CFG 3 the same test moves them 1.9e-6 / 2.6e-6
    case("sd1", "txt2img", "DPM adaptive", 5, 63, cfg=3.0),
    case("sd1", "img2img", "DPM adaptive", 8, 64, cfg=3.0),
    case("sd1", "txt2img", "Restart", 6, 65),
    # >= 20 steps: A1111 re-schedules (Karras of steps - 9, one restart of 9 Heun steps)
    case("sd1", "txt2img", "Restart", 20, 66, batch=1),
    case("sd1", "img2img", "Restart", 28, 67, batch=1),  # t_enc 21: 21 steps, re-scheduled
    case("sd1", "txt2img", "DDIM CFG++", 6, 68),
    case("sd1", "img2img", "DDIM CFG++", 8, 69),
    case("sd1", "txt2img", "UniPC", 6, 70),
    case("sd1", "img2img", "UniPC", 10, 71),
    case("sd2-v", "txt2img", "UniPC", 5, 72, rng="NV", batch=1),
    case("sd2-v", "img2img", "UniPC", 8, 73, rng="NV", batch=1),
    # the v model with Philox noise; DPM fast at CFG 3 (at CFG 7 the self-test above moves
    # its latents 9.8e-6), DPM adaptive left out: on the tiny SD2-v model its step control
    # turns that 1e-6 into 1.1e-4 (txt2img, CFG 3) / 5e-5 (img2img, CFG 2)
    case("sd2-v", "txt2img", "DPM fast", 6, 83, rng="NV", batch=1, cfg=3.0),
    case("sd2-v", "img2img", "DPM fast", 8, 87, rng="NV", batch=1, cfg=3.0),
    case("sd2-v", "img2img", "Restart", 28, 84, rng="NV", batch=1),
    case("sd2-v", "txt2img", "DDIM CFG++", 6, 85, rng="NV", batch=1),
    case("sd2-v", "img2img", "DDIM CFG++", 8, 86, rng="NV", batch=1),
]
# UniPC img2img with a mask, on make_inpaint_fixtures' inputs (its first case's settings)
INPAINT_CASES = [
    dict(I.cases()[0], name=n, arch=arch, sampler="UniPC", scheduler=None, fill=fill, full_res=full_res,
         mask=mask, seed=seed, rng="CPU", steps=10)
    for n, arch, fill, full_res, mask, seed in (
        ("sd1_inpaint_unipc_original_whole", "sd1", 1, False, "ellipse", 74),
        ("sd1_inpaint_unipc_fill_only_masked", "sd1", 0, True, "alpha", 75),
        ("sd1inpaint_inpaint_unipc_original_whole", "sd1-inpaint", 1, False, "ellipse", 76),
    )
]


def cfg_eps(unet, cond, uncond, cfg, x, t_input, ac=None, cfg_pp=False, image_cond=None):
    """CFGDenoiserTimesteps over CompVisTimesteps(V)Denoiser: guided ε (and the uncond ε) at
    VP-scale x and U-Net timestep t_input (a float32 scalar tensor)."""
    b = x.shape[0]
    x_in = torch.cat([x, x])
    ctx = torch.cat([cond.expand(b, -1, -1), uncond.expand(b, -1, -1)])
    tt = t_input.reshape(1).expand(2 * b)
    unet_in = x_in if image_cond is None else torch.cat([x_in, torch.cat([image_cond, image_cond])], dim=1)
    out = unet(unet_in, tt, encoder_hidden_states=ctx).sample
    if ac is not None:  # v model: predict_eps_from_z_and_v at t.to(int)
        i = tt.to(torch.int)
        out = torch.sqrt(ac)[i, None, None, None] * out + torch.sqrt(1 - ac)[i, None, None, None] * x_in
    e_c, e_u = out[:b], out[b:]
    scale = cfg * (1 / 12.5) if cfg_pp else cfg
    return e_u + (e_c - e_u) * scale, e_u


def unipc_run(c, unet, cond, uncond, ac, x, timesteps, img2img, v, blend=None, image_cond=None):
    ns = VP(ac)

    def x0_model(x, t):
        t_input = (t - 1. / ns.N) * 1000.  # UniPCCFG.get_model_input_time, float32
        x_in = x if blend is None else blend(x)
        e, _ = cfg_eps(unet, cond, uncond, c["cfg"], x_in, t_input, ac if v else None, image_cond=image_cond)
        return (x - ns.std(t) * e) / ns.alpha(t)

    t_start = timesteps[-1] / 1000 + 1 / 1000 if img2img else None
    return unipc(x0_model, x, ac, len(timesteps), t_start=t_start, order=3, callback=lambda _: None)


def timestep_run(c, unet, cond, uncond, noise, init, draw, v):
    ac = G.FakeLDM().alphas_cumprod
    steps = c["steps"]
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    x = noise
    if init is not None:
        t_enc = int(min(c["strength"], 0.999) * steps)
        a = ac[timesteps[t_enc]]
        x = init * torch.sqrt(a) + noise * torch.sqrt(1 - a)
        timesteps = timesteps[:t_enc]
    if c["sampler"] == "UniPC":
        return unipc_run(c, unet, cond, uncond, ac, x, timesteps, init is not None, v)

    class CfgPP:
        last_noise_uncond = None

        def __call__(self, x, t):
            e, self.last_noise_uncond = cfg_eps(unet, cond, uncond, c["cfg"], x, torch.tensor(float(t)),
                                                ac if v else None, cfg_pp=True)
            return e

    return ddim_cfgpp_a1111(CfgPP(), x, timesteps, ac, 0.0, draw, lambda _: None)


def sigma_run(c, inner, den, noise, init, draw):
    steps = c["steps"]
    sigmas = G.sigmas_for(inner, dict(c, scheduler="karras" if c["sampler"] == "Restart" else None), steps)
    if init is not None:
        t_enc = int(min(c["strength"], 0.999) * steps)
        sched = sigmas[steps - t_enc - 1:]
        x = init + noise * sched[0]
        lo, hi, n = sched[-2], sched[0], len(sched) - 1
    else:
        sched = sigmas
        x = noise * sigmas[0]
        lo, hi, n = inner.sigmas[0].item(), inner.sigmas[-1].item(), steps
    if c["sampler"] == "DPM fast":
        return K.sample_dpm_fast(den, x, lo, hi, n, eta=1.0, noise_sampler=draw, disable=True)
    if c["sampler"] == "DPM adaptive":
        out, info = K.sample_dpm_adaptive(den, x, lo, hi, eta=1.0, noise_sampler=draw, disable=True,
                                          return_info=True)
        c["adaptive_steps"] = int(info["steps"])
        c["adaptive_nfe"] = int(info["nfe"])
        return out
    if c["sampler"] == "Restart":
        out, n_steps = restart_a1111(den, x, sched, draw)
        c["heun_steps"] = n_steps
        return out
    raise ValueError(c["sampler"])


def run(c, tok1, tok2, init_image):
    v = c["arch"] == "sd2-v"
    if c["arch"] not in G._MODELS:
        G._MODELS[c["arch"]] = G.build(c["arch"], G.ARCH_SEED[c["arch"]])
    unet, vae, te = G._MODELS[c["arch"]]
    inner = (external.CompVisVDenoiser if v else external.CompVisDenoiser)(G.LDM(unet))
    tok = tok2 if v else tok1
    with torch.no_grad():
        cond = G.encode(te, tok, G.PROMPT, v)
        uncond = G.encode(te, tok, G.NEGATIVE, v)
        seeds = [c["seed"] + i for i in range(c["batch"])]
        rng = ImageRNG(c["rng"], (4, G.SIZE // 8, G.SIZE // 8), seeds)
        noise = rng.next()
        draws = [0]

        def draw(*_):
            draws[0] += 1
            return rng.next()

        init = None
        if c["mode"] == "img2img":
            x0 = torch.from_numpy(np.asarray(init_image).astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
            init = vae.encode(x0).latent_dist.mean * 0.18215
        if c["sampler"] in ("DDIM CFG++", "UniPC"):
            out = timestep_run(c, unet, cond, uncond, noise, init, draw, v)
        else:
            out = sigma_run(c, inner, G.CFGDenoiser(inner, cond, uncond, c["cfg"]), noise, init, draw)
        c["draws"] = draws[0]
    return out


def inpaint_run(c, tok1, init_img, masks):
    """make_inpaint_fixtures.run's processing, sampled with UniPC as CFGDenoiserTimesteps does."""
    if c["arch"] not in G._MODELS:
        G._MODELS[c["arch"]] = G.build(c["arch"], G.ARCH_SEED[c["arch"]])
    unet, vae, te = G._MODELS[c["arch"]]
    image, image_mask, latmask, _, _, _ = I.img2img_init(c, init_img, masks[c["mask"]])
    with torch.no_grad():
        cond = G.encode(te, tok1, G.PROMPT, False)
        uncond = G.encode(te, tok1, G.NEGATIVE, False)
        img = np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0)
        source = torch.from_numpy(img[None]) * 2 - 1
        init_latent = I.vae_encode(vae, source)
        lm = np.tile(latmask[None], (4, 1, 1))
        mask, nmask = torch.asarray(1.0 - lm), torch.asarray(lm)
        image_cond = None
        if c["arch"] == "sd1-inpaint":  # as make_inpaint_fixtures.run, mask weight 1, rounded
            cm = torch.round(torch.from_numpy(np.array(image_mask.convert("L")).astype(np.float32) / 255.0)[None, None])
            ci = I.vae_encode(vae, torch.lerp(source, source * (1.0 - cm), c["mask_weight"]))
            cm = torch.nn.functional.interpolate(cm, size=init_latent.shape[-2:])
            image_cond = torch.cat([cm, ci], dim=1)
        noise = ImageRNG(c["rng"], (4, G.SIZE // 8, G.SIZE // 8), [c["seed"]]).next()
        ac = G.FakeLDM().alphas_cumprod
        steps = c["steps"]
        timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
        t_enc = int(min(c["strength"], 0.999) * steps)
        a = ac[timesteps[t_enc]]
        x = init_latent * torch.sqrt(a) + noise * torch.sqrt(1 - a)
        out = unipc_run(c, unet, cond, uncond, ac, x, timesteps[:t_enc], True, False,
                        blend=lambda x: init_latent * mask + nmask * x, image_cond=image_cond)
        return out * nmask + init_latent * mask


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
        print(c["name"], float(lat.std()), {k: c[k] for k in ("draws", "adaptive_steps", "heun_steps") if k in c})
    inpaint_dir = os.path.join(root, "fixtures/inpaint")
    init = Image.open(os.path.join(inpaint_dir, "init.png")).convert("RGB")
    masks = {k: Image.open(os.path.join(inpaint_dir, f"mask_{k}.png")) for k in ("ellipse", "alpha")}
    for c in INPAINT_CASES:
        lat = inpaint_run(c, tok1, init, masks)
        tensors[c["name"] + "/latents"] = lat.contiguous()
        print(c["name"], float(lat.std()))
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"prompt": G.PROMPT, "negative_prompt": G.NEGATIVE, "size": G.SIZE, "cases": CASES,
                   "inpaint_cases": INPAINT_CASES}, f, indent=1)


if __name__ == "__main__":
    main()
