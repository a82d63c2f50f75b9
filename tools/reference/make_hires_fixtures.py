#!/usr/bin/env python3
"""End-to-end reference for crates/sumi-pipeline/tests/hires_parity.rs: A1111 v1.10.1's txt2img
with the hires fix (modules/processing.py StableDiffusionProcessingTxt2Img:
calculate_target_resolution, sample, sample_hr_pass; sd_samplers_kdiffusion.sample_img2img;
sd_samplers_common.setup_img2img_steps; images.resize_image; upscaler.Upscaler.upscale) restated
over the tiny models, with make_generate_fixtures.py's models, prompts, CFG denoiser, ImageRNG and
VAE posterior mean.

The second pass, as A1111 runs it:
- target: hr_scale → int(w·scale) × int(h·scale); hr_resize_x/y → A1111's floor divisions, and
  with both set the latent crop truncate = (upscale_to − target) // 8, cut half before, half after.
- latent modes: torch.nn.functional.interpolate(samples, size=(th // 8, tw // 8), mode, antialias)
  per shared.latent_upscale_modes; image upscalers: the first pass decoded (clamp, ×255, uint8),
  images.resize_image(0, im, tw, th, upscaler_name) (Pillow 9.5.0, A1111's pin), /255, ×2 − 1,
  VAE posterior mean.
- noise: a new ImageRNG at the second pass's latent shape over the same seeds; its first draw is
  the noise, later draws the ancestral samplers' noise.
- sample_img2img with steps = hr_second_pass_steps or steps given, so "exact steps":
  total = int(steps / min(strength, 0.999)), t_enc = steps − 1, sigma_sched = sigmas[total −
  t_enc − 1:], x = init + noise · sigma_sched[0]; the hires sampler and schedule; the hires
  prompt's conditioning (plain prompts here: no schedule to re-time).

Setup: Pillow 9.5.0 in tools/reference/.pil95 (see make_inpaint_fixtures.py).
Usage: make_hires_fixtures.py TOKENIZER_SD1_DIR TOKENIZER_SD2_DIR OUT_DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_inpaint_fixtures as I  # noqa: E402,F401,I100 (first: it puts Pillow 9.5.0 on the path)
import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from k_diffusion import external, sampling as K  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

import make_generate_fixtures as G  # noqa: E402
from sampling_a1111_fixtures import ImageRNG  # noqa: E402

assert PIL.__version__ == "9.5.0", PIL.__version__

LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PROMPT, NEGATIVE = G.PROMPT, G.NEGATIVE
HR_PROMPT = "a painting of an astronaut riding a horse"


def case(name, arch="sd1", sampler="Euler", scheduler=None, rng="CPU", seed=500, steps=4, cfg=7.0, batch=1,
         width=128, height=128, hr_scale=1.5, hr_resize_x=0, hr_resize_y=0, hr_steps=0, strength=0.6,
         hr_upscaler=None, hr_sampler=None, hr_scheduler=None, hr_prompt="", latents_only=False):
    return dict(name=name, arch=arch, sampler=sampler, scheduler=scheduler, rng=rng, seed=seed, steps=steps,
                cfg=cfg, batch=batch, width=width, height=height, hr_scale=hr_scale, hr_resize_x=hr_resize_x,
                hr_resize_y=hr_resize_y, hr_steps=hr_steps, strength=strength, hr_upscaler=hr_upscaler,
                hr_sampler=hr_sampler, hr_scheduler=hr_scheduler, hr_prompt=hr_prompt, latents_only=latents_only)


CASES = [
    # first passes of 128 px: at 64 px the tiny U-Net's deepest level is 1x1, where its GroupNorms see two
    # values a group and float32 rounding alone moves the result by 1e-3
    # every latent mode, 1.5x (upscale) on SD1; None is A1111's default ("Latent")
    case("sd1_latent_default", seed=501, batch=2),
    *[case(f"sd1_{m.lower().replace(' ', '_').replace('(', '').replace(')', '')}", seed=502 + i, hr_upscaler=m)
      for i, m in enumerate(LATENT_MODES)],
    # a scale whose size is not a multiple of 8 (int(128 * 1.3) = 166: latent 20)
    case("sd1_bicubic_aa_1_3x", seed=510, hr_scale=1.3, hr_upscaler="Latent (bicubic antialiased)"),
    # image upscalers (Pillow-exact)
    case("sd1_image_none", seed=511, hr_upscaler="None"),
    case("sd1_image_lanczos", seed=512, hr_upscaler="Lanczos", batch=2, hr_scale=1.25),
    case("sd1_image_nearest", seed=513, hr_upscaler="Nearest", hr_scale=2.0),
    # resize with crop (both set: fill 192x192, crop to 192x160), resize by width only
    case("sd1_resize_crop", seed=514, hr_resize_x=192, hr_resize_y=160, hr_upscaler="Latent"),
    case("sd1_resize_width", seed=515, width=128, height=192, hr_resize_x=160, hr_upscaler="Lanczos"),
    # second-pass steps, sampler, schedule and prompt of their own
    case("sd1_hr_sampler_steps", seed=516, sampler="DPM++ 2M", scheduler="karras", hr_steps=3,
         hr_sampler="Euler a", hr_prompt=HR_PROMPT, batch=2, rng="NV"),
    case("sd1_hr_scheduler", seed=517, sampler="Euler a", hr_scheduler="karras", hr_upscaler="Latent (nearest)"),
    # SD2-v
    case("sd2v_latent", arch="sd2-v", seed=518, sampler="DPM++ 2M", scheduler="karras", batch=2),
    case("sd2v_image_lanczos", arch="sd2-v", seed=519, hr_upscaler="Lanczos", strength=0.45, rng="NV", hr_scale=1.25),
    # an inpainting checkpoint: the second pass's image conditioning (a blank picture, all ones)
    case("sd1inpaint_latent", arch="sd1-inpaint", seed=520),
]

# pictures are kept for these (the latents of all are compared): every image-upscaler case, whose second pass starts
# from the first pass's 8-bit pictures. There a float32 rounding that moves one value across a truncation boundary
# changes a level, and the latents move with it: this reference against itself, with its denoiser outputs scaled by
# 1 + 1e-6 randn, moves the final latents of the image-upscaler cases 1.0e-5 - 2.3e-5 of max(1, max |x|) (latent
# cases: 4.7e-6), so their pictures (within 1 level) are the measure there
IMAGE_CASES = ["sd1_latent_bicubic_antialiased", "sd1_image_none", "sd1_image_lanczos", "sd1_image_nearest",
               "sd1_resize_crop", "sd1_resize_width", "sd2v_image_lanczos"]


def target(c):
    """calculate_target_resolution."""
    w, h = c["width"], c["height"]
    rx, ry = c["hr_resize_x"], c["hr_resize_y"]
    tx = ty = 0
    if rx == 0 and ry == 0:
        x, y = int(w * c["hr_scale"]), int(h * c["hr_scale"])
    elif ry == 0:
        x, y = rx, rx * h // w
    elif rx == 0:
        x, y = ry * w // h, ry
    else:
        if w / h < rx / ry:
            x, y = rx, rx * h // w
        else:
            x, y = ry * w // h, ry
        tx, ty = (x - rx) // 8, (y - ry) // 8
    return x, y, tx, ty


def lanczos_upscale(img, scale, resample):
    """upscaler.Upscaler.upscale with UpscalerLanczos / UpscalerNearest's do_upscale."""
    dest_w = int((img.width * scale) // 8 * 8)
    dest_h = int((img.height * scale) // 8 * 8)
    for i in range(3):
        if img.width >= dest_w and img.height >= dest_h and (i > 0 or scale != 1):
            break
        shape = (img.width, img.height)
        img = img.resize((int(img.width * scale), int(img.height * scale)), resample=resample)
        if shape == (img.width, img.height):
            break
    if img.width != dest_w or img.height != dest_h:
        img = img.resize((int(dest_w), int(dest_h)), resample=Image.LANCZOS)
    return img


def resize_image(im, w, h, upscaler):
    """images.resize_image(0, im, w, h, upscaler_name) for the built-in upscalers."""
    if upscaler is None or upscaler == "None":
        return im.resize((w, h), resample=Image.LANCZOS)
    scale = max(w / im.width, h / im.height)
    if scale > 1.0:
        im = lanczos_upscale(im, scale, {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}[upscaler])
    if im.width != w or im.height != h:
        im = im.resize((w, h), resample=Image.LANCZOS)
    return im


def sigmas_for(inner, scheduler, steps):
    if scheduler == "karras":
        return K.get_sigmas_karras(steps, inner.sigmas[0].item(), inner.sigmas[-1].item())
    return inner.get_sigmas(steps)


def default_scheduler(sampler):
    return "karras" if sampler == "DPM++ 2M" else None


def sample(den, x, sigmas, sampler, rng):
    if sampler == "Euler a":
        return K.sample_euler_ancestral(den, x, sigmas, noise_sampler=lambda s, sn: rng.next(), disable=True)
    if sampler == "Euler":
        return K.sample_euler(den, x, sigmas, disable=True)
    if sampler == "DPM++ 2M":
        return K.sample_dpmpp_2m(den, x, sigmas, disable=True)
    raise ValueError(sampler)


def to_uint8(img):
    img = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)
    return (255.0 * img.permute(0, 2, 3, 1).numpy()).astype(np.uint8)


def image_cond_blank(vae, n, h, w):
    """txt2img_image_conditioning of an inpainting model: a blank (0.5) picture, mask of ones."""
    lat = vae.encode(torch.zeros(1, 3, h * 8, w * 8)).latent_dist.mean * 0.18215
    return torch.cat([torch.ones(1, 1, h, w), lat], dim=1).repeat(n, 1, 1, 1)


def run(c, tok1, tok2):
    sd2 = c["arch"] == "sd2-v"
    if c["arch"] not in G._MODELS:
        G._MODELS[c["arch"]] = G.build(c["arch"], G.ARCH_SEED[c["arch"]])
    unet, vae, te = G._MODELS[c["arch"]]
    inner = (external.CompVisVDenoiser if sd2 else external.CompVisDenoiser)(G.LDM(unet))
    tok = tok2 if sd2 else tok1
    inpaint = c["arch"] == "sd1-inpaint"
    with torch.no_grad():
        cond, uncond = G.encode(te, tok, PROMPT, sd2), G.encode(te, tok, NEGATIVE, sd2)
        seeds = [c["seed"] + i for i in range(c["batch"])]
        # first pass
        shape = (4, c["height"] // 8, c["width"] // 8)
        rng = ImageRNG(c["rng"], shape, seeds)
        sched = c["scheduler"] or default_scheduler(c["sampler"])
        sigmas = sigmas_for(inner, sched, c["steps"])
        x = rng.next() * sigmas[0]
        ic = image_cond_blank(vae, c["batch"], *shape[1:]) if inpaint else None
        samples = sample(G.CFGDenoiser(inner, cond, uncond, c["cfg"], ic), x, sigmas, c["sampler"], rng)
        # upscale
        tw, th, tx, ty = target(c)
        up = c["hr_upscaler"]
        if up is None or up in LATENT_MODES:
            mode, aa = LATENT_MODES[up or "Latent"]
            samples = torch.nn.functional.interpolate(samples, size=(th // 8, tw // 8), mode=mode, antialias=aa)
            ic = image_cond_blank(vae, c["batch"], th // 8, tw // 8) if inpaint else None
        else:
            first = to_uint8(vae.decode(samples / 0.18215).sample)
            pics = [np.asarray(resize_image(Image.fromarray(p), tw, th, up)).astype(np.float32) / 255.0
                    for p in first]
            decoded = torch.from_numpy(np.array(pics)).permute(0, 3, 1, 2)
            samples = torch.stack([vae.encode((d * 2 - 1)[None]).latent_dist.mean[0] * 0.18215 for d in decoded])
            assert not inpaint
        samples = samples[:, :, ty // 2:samples.shape[2] - (ty + 1) // 2, tx // 2:samples.shape[3] - (tx + 1) // 2]
        # second pass
        rng = ImageRNG(c["rng"], tuple(samples.shape[1:]), seeds)
        noise = rng.next()
        hr_sampler = c["hr_sampler"] or c["sampler"]
        # the API's get_sampler_and_scheduler turns a sampler's own default schedule into "Automatic",
        # and the hires pass inherits that: "Automatic" for the hires sampler is its own default
        first = None if c["scheduler"] == default_scheduler(c["sampler"]) else c["scheduler"]
        hr_sched = c["hr_scheduler"] or first or default_scheduler(hr_sampler)
        steps = c["hr_steps"] or c["steps"]
        total = int(steps / min(c["strength"], 0.999))
        t_enc = steps - 1
        sig = sigmas_for(inner, hr_sched, total)[total - t_enc - 1:]
        hr_cond = G.encode(te, tok, c["hr_prompt"] or PROMPT, sd2)
        xi = samples + noise * sig[0]
        out = sample(G.CFGDenoiser(inner, hr_cond, uncond, c["cfg"], ic), xi, sig, hr_sampler, rng)
        img = to_uint8(vae.decode(out / 0.18215).sample)
    return out.contiguous(), torch.from_numpy(img).contiguous()


def main():
    torch.set_num_threads(2)
    tok1 = CLIPTokenizer.from_pretrained(sys.argv[1])
    tok2 = CLIPTokenizer.from_pretrained(sys.argv[2])
    out = sys.argv[3]
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for c in CASES:
        lat, img = run(c, tok1, tok2)
        tensors[c["name"] + "/latents"] = lat
        if c["name"] in IMAGE_CASES:  # pixels for a few (the latents of all are compared)
            tensors[c["name"] + "/image"] = img
        print(c["name"], tuple(img.shape), float(lat.std()), img.float().mean().item())
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative_prompt": NEGATIVE, "hr_prompt": HR_PROMPT, "image_cases": IMAGE_CASES,
                   "cases": CASES}, f, indent=1)


if __name__ == "__main__":
    main()
