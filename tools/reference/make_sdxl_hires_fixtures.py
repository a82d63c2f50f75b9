#!/usr/bin/env python3
"""End-to-end SDXL reference for crates/sumi-pipeline/tests/sdxl_hires.rs: the hires fix, the SD
upscale script and masked inpainting on the tiny SDXL base and SDXL inpainting models, restating
A1111 v1.10.1 with make_sdxl_generate_fixtures.py's SDXL conditioning, CFG denoiser and decode,
make_hires_fixtures.py's second pass, make_sd_upscale_fixtures.py's tiling and
make_inpaint_fixtures.py's mask processing (Pillow 9.5.0 and OpenCV from tools/reference/.pil95).

SDXL's part, as A1111 runs it:
  * hires fix (processing.py calculate_hr_conds): the second pass's prompts are
    SdConditioning(width=hr_upscale_to_x, height=hr_upscale_to_y), so the ADM vector's original
    and target sizes are the upscale target's, before the crop (truncate_x/y) that follows;
    the first pass's are the request's width and height;
  * SD upscale (scripts/sd_upscale.py): every tile is an img2img job of p.width x p.height, the
    tile's size, which the conditioning reads;
  * masked inpainting on the 4-channel base: the latent mask blend of make_inpaint_fixtures.py
    (CFGDenoiser's denoised · nmask + init_latent · mask after each step and on the result); on
    the 9-channel SDXL inpainting U-Net the image conditioning is
    inpainting_image_conditioning(image, latent, image_mask) through img2img_image_conditioning's
    is_sdxl_inpaint branch, which does not pass round_image_mask on: the conditioning's mask is
    rounded even when the request's mask is not (the latent mask follows mask_round);
  * the VAE encodes to its posterior mean × 0.13025 (Sumi's documented choice).

Usage: make_sdxl_hires_fixtures.py [--bpe FILE]   (writes fixtures/sdxl_hires/)
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_inpaint_fixtures as I  # noqa: E402,I100 (first: it puts Pillow 9.5.0 on the path)
import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from k_diffusion import external  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import make_hires_fixtures as H  # noqa: E402
import make_sdxl_generate_fixtures as X  # noqa: E402
from make_upscaler_fixtures import combine_grid, split_grid  # noqa: E402
from sampling_a1111_fixtures import ImageRNG  # noqa: E402

assert PIL.__version__ == "9.5.0", PIL.__version__
# make_generate_fixtures (imported by make_hires_fixtures) switches diffusers to A1111's LDM U-Net
# behaviour at odd latent sizes; every size here is a multiple of 32 pixels, where nothing changes
ROOT = X.ROOT
OUT = os.path.join(ROOT, "fixtures", "sdxl_hires")
SCALE = X.SCALE
PROMPT = "a photo of a (cat:1.3) on a [blurry] hill"
NEGATIVE = "lowres, (bad hands:1.2), text"


def hires(name, seed, width=64, height=64, sampler="Euler", scheduler=None, rng="CPU", steps=4, cfg=7.0,
          batch=1, hr_scale=2.0, hr_resize_x=0, hr_resize_y=0, hr_steps=0, strength=0.6, hr_upscaler=None,
          hr_sampler=None, hr_prompt="", negative=NEGATIVE):
    return dict(name=name, kind="hires", arch="sdxl", seed=seed, width=width, height=height, sampler=sampler,
                scheduler=scheduler, rng=rng, steps=steps, cfg=cfg, batch=batch, hr_scale=hr_scale,
                hr_resize_x=hr_resize_x, hr_resize_y=hr_resize_y, hr_steps=hr_steps, strength=strength,
                hr_upscaler=hr_upscaler, hr_sampler=hr_sampler, hr_scheduler=None, hr_prompt=hr_prompt,
                prompt=PROMPT, negative=negative)


def inpaint(name, arch, seed, fill, full_res, mask, sampler="Euler", scheduler=None, rng="CPU", batch=1,
            round=True, mask_weight=1.0, invert=False):
    return dict(name=name, kind="inpaint", mode="img2img", arch=arch, seed=seed, fill=fill, full_res=full_res, mask=mask,
                sampler=sampler, scheduler=scheduler, rng=rng, batch=batch, round=round, mask_weight=mask_weight,
                invert=invert, blur_x=4, blur_y=4, padding=8, resize_mode=0, steps=5, cfg=7.0, strength=0.75,
                width=I.SIZE, height=I.SIZE, prompt=PROMPT, negative=NEGATIVE)


CASES = [
    # Latent (A1111's default), 64x96 → 128x192, 3 second-pass steps, Euler a (sampler noise), batch 2
    hires("hires_latent_euler_a_batch2", 2001, width=64, height=96, sampler="Euler a", hr_steps=3, batch=2),
    # resize with A1111's crop: 64² filled to 128², 4 latent rows cut to 128x96; the conditioning's sizes
    # are the 128² upscale target; DPM++ 2M Karras, NV noise, an empty negative prompt (zero embeddings)
    hires("hires_bicubic_aa_resize_crop", 2002, sampler="DPM++ 2M", scheduler="karras", rng="NV",
          hr_resize_x=128, hr_resize_y=96, hr_upscaler="Latent (bicubic antialiased)", negative=""),
    # an image upscaler: the first pass's pictures through Lanczos 2x, encoded again; 2 second-pass steps,
    # the hires prompt of its own
    hires("hires_lanczos_hr_prompt", 2003, hr_upscaler="Lanczos", hr_steps=2, strength=0.5,
          hr_prompt="a painting of a (dog:1.2) in the snow"),
    # SD upscale: the 128x64 astronaut, Lanczos 1.25 → 160x80, tiles of 96x64 overlapping 32 (2x2), batches
    # of 2, Euler a
    dict(name="sd_upscale_lanczos", kind="sd_upscale", mode="img2img", arch="sdxl", source="sd_upscale/source_128x64.png",
         upscaler="Lanczos", scale=1.25, overlap=32, sampler="Euler a", scheduler=None, rng="CPU", seed=2010,
         steps=4, cfg=7.0, strength=0.5, batch=2, n_iter=1, width=96, height=64, prompt=PROMPT, negative=NEGATIVE),
    # masked inpainting on the 4-channel base (fixtures/inpaint's source and masks, 144x128 → 128²)
    inpaint("inpaint_base_original_whole", "sdxl", 2020, fill=1, full_res=False, mask="ellipse"),
    inpaint("inpaint_base_latent_noise_only_masked", "sdxl", 2021, fill=2, full_res=True, mask="alpha",
            sampler="DPM++ 2M", scheduler="karras", rng="NV", batch=2),
    # the 9-channel SDXL inpainting U-Net with a mask: an unrounded soft mask (the conditioning's is rounded
    # all the same), and a mask weight of 0.5 at "only masked"
    inpaint("inpaint_sdxl_inpaint_fill_soft_unrounded", "sdxl-inpaint", 2022, fill=0, full_res=False, mask="soft",
            round=False),
    inpaint("inpaint_sdxl_inpaint_weight_half_only_masked", "sdxl-inpaint", 2023, fill=1, full_res=True,
            mask="ellipse", mask_weight=0.5, invert=True),
]


class Masked(X.CFGDenoiser):
    """A1111's CFGDenoiser with the latent mask blend after the guidance."""

    def __init__(self, inner, cond, uncond, cfg, image_cond, init_latent, mask, nmask):
        super().__init__(inner, cond, uncond, cfg, image_cond)
        self.init_latent, self.mask, self.nmask = init_latent, mask, nmask

    def __call__(self, x, sigma, **kw):
        den = super().__call__(x, sigma, **kw)
        return den if self.mask is None else den * self.nmask + self.init_latent * self.mask


def scheduled_sigmas(inner, scheduler, steps):
    return H.sigmas_for(inner, scheduler, steps)


def vae_encode(vae, x):
    return vae.encode(x).latent_dist.mean * SCALE


def decode(vae, latents):
    return H.to_uint8(vae.decode(latents / SCALE).sample)


def blank_cond(vae, n, h, w):
    """txt2img_image_conditioning for is_sdxl_inpaint: mask of ones, a 0.5-grey picture's latents."""
    return torch.cat([torch.ones(1, 1, h, w), vae_encode(vae, torch.zeros(1, 3, h * 8, w * 8))], 1).repeat(n, 1, 1, 1)


def run_hires(c, model, cond_size=None):
    unet, vae, enc = model
    inner = external.CompVisDenoiser(X.LDM(unet))
    inpaint = c["arch"] == "sdxl-inpaint"
    seeds = [c["seed"] + i for i in range(c["batch"])]
    # first pass: the request's size in the conditioning
    w, h = c["width"], c["height"]
    cond, uncond = X.encode(enc, c["prompt"], False, w, h), X.encode(enc, c["negative"], True, w, h)
    shape = (4, h // 8, w // 8)
    rng = ImageRNG(c["rng"], shape, seeds)
    sched = c["scheduler"] or H.default_scheduler(c["sampler"])
    sigmas = scheduled_sigmas(inner, sched, c["steps"])
    ic = blank_cond(vae, c["batch"], *shape[1:]) if inpaint else None
    samples = H.sample(X.CFGDenoiser(inner, cond, uncond, c["cfg"], ic), rng.next() * sigmas[0], sigmas,
                       c["sampler"], rng)
    # upscale
    tw, th, tx, ty = H.target(c)
    up = c["hr_upscaler"]
    if up is None or up in H.LATENT_MODES:
        mode, aa = H.LATENT_MODES[up or "Latent"]
        samples = torch.nn.functional.interpolate(samples, size=(th // 8, tw // 8), mode=mode, antialias=aa)
        ic = blank_cond(vae, c["batch"], th // 8, tw // 8) if inpaint else None
    else:
        assert not inpaint
        pics = [np.asarray(H.resize_image(Image.fromarray(p), tw, th, up)).astype(np.float32) / 255.0
                for p in decode(vae, samples)]
        decoded = torch.from_numpy(np.array(pics)).permute(0, 3, 1, 2)
        samples = torch.cat([vae_encode(vae, (d * 2 - 1)[None]) for d in decoded])
    samples = samples[:, :, ty // 2:samples.shape[2] - (ty + 1) // 2, tx // 2:samples.shape[3] - (tx + 1) // 2]
    # second pass: fresh noise at the new size, exact steps, the conditioning at the upscale target's size
    rng = ImageRNG(c["rng"], tuple(samples.shape[1:]), seeds)
    noise = rng.next()
    hr_sampler = c["hr_sampler"] or c["sampler"]
    first = None if c["scheduler"] == H.default_scheduler(c["sampler"]) else c["scheduler"]
    hr_sched = c["hr_scheduler"] or first or H.default_scheduler(hr_sampler)
    steps = c["hr_steps"] or c["steps"]
    total = int(steps / min(c["strength"], 0.999))
    sig = scheduled_sigmas(inner, hr_sched, total)[total - (steps - 1) - 1:]
    cw, ch = cond_size or (tw, th)
    hr_cond = X.encode(enc, c["hr_prompt"] or c["prompt"], False, cw, ch)
    hr_uncond = X.encode(enc, c["negative"], True, cw, ch)
    out = H.sample(X.CFGDenoiser(inner, hr_cond, hr_uncond, c["cfg"], ic), samples + noise * sig[0], sig, hr_sampler,
                   rng)
    return out, decode(vae, out)


def img2img(c, model, x0, seeds, mask=None, nmask=None, image_cond=None, fill=1):
    """One k-diffusion img2img batch from pictures x0 in [0, 1] (the latent blend where `mask` is given)."""
    unet, vae, enc = model
    inner = external.CompVisDenoiser(X.LDM(unet))
    w, h = c["width"], c["height"]
    cond, uncond = X.encode(enc, c["prompt"], False, w, h), X.encode(enc, c["negative"], True, w, h)
    shape = (4, h // 8, w // 8)
    init = vae_encode(vae, x0 * 2 - 1)
    if mask is not None and fill == 2:
        init = init * mask + ImageRNG(c["rng"], shape, seeds).next() * nmask
    elif mask is not None and fill == 3:
        init = init * mask
    rng = ImageRNG(c["rng"], shape, seeds)
    noise = rng.next()
    steps = c["steps"]
    sigmas = scheduled_sigmas(inner, c["scheduler"], steps)
    t_enc = int(min(c["strength"], 0.999) * steps)
    run_sigmas = sigmas[steps - t_enc - 1:]
    den = Masked(inner, cond, uncond, c["cfg"], image_cond, init, mask, nmask)
    out = H.sample(den, init + noise * run_sigmas[0], run_sigmas, c["sampler"], rng)
    if mask is not None:
        out = out * nmask + init * mask
    return out, decode(vae, out)


def unit(pics):
    return torch.stack([torch.from_numpy(np.asarray(p).astype(np.float32) / 255.0).permute(2, 0, 1) for p in pics])


def run_sd_upscale(c, model):
    src = Image.open(os.path.join(ROOT, "fixtures", c["source"])).convert("RGB")
    img = H.lanczos_upscale(src, c["scale"], Image.LANCZOS)
    grid = split_grid(img, tile_w=c["width"], tile_h=c["height"], overlap=c["overlap"])
    work = [t[2] for _y, _h, row in grid.tiles for t in row]
    bs = c["batch"]
    results, last = [], None
    for n in range(c["n_iter"]):
        made = []
        for i in range(math.ceil(len(work) / bs)):
            chunk = work[i * bs:(i + 1) * bs]
            seeds = [c["seed"] + n + i + j for j in range(len(chunk))]
            last, pics = img2img(c, model, unit(chunk), seeds)
            made += [Image.fromarray(p) for p in pics]
        k = 0
        for _y, _h, row in grid.tiles:
            for tiledata in row:
                tiledata[2] = made[k]
                k += 1
        results.append(np.asarray(combine_grid(grid)))
    return last[-1:], np.stack(results)


def run_inpaint(c, model, init_img, masks):
    image, image_mask, latmask, overlay, paste_to, _ = I.img2img_init(c, init_img, masks[c["mask"]])
    bs = c["batch"]
    x0 = unit([image] * bs)
    lm = np.tile(latmask[None], (4, 1, 1))
    mask, nmask = torch.asarray(1.0 - lm), torch.asarray(lm)
    image_cond = None
    if c["arch"] == "sdxl-inpaint":
        source = x0 * 2 - 1
        cm = np.array(image_mask.convert("L")).astype(np.float32) / 255.0
        cm = torch.round(torch.from_numpy(cm[None, None]))  # is_sdxl_inpaint: always rounded
        ci = vae_encode(model[1], torch.lerp(source, source * (1.0 - cm), c["mask_weight"]))
        cm = torch.nn.functional.interpolate(cm, size=ci.shape[-2:]).expand(ci.shape[0], -1, -1, -1)
        image_cond = torch.cat([cm, ci], dim=1)
    seeds = [c["seed"] + i for i in range(bs)]
    out, pics = img2img(c, model, x0, seeds, mask, nmask, image_cond, c["fill"])
    pics = [np.asarray(I.apply_overlay(Image.fromarray(p), paste_to, overlay)) for p in pics]
    return out, np.stack(pics)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", default=X.BPE)
    args = ap.parse_args()
    tokenize_line = X.chunker(args.bpe)
    fx = os.path.join(ROOT, "fixtures", "inpaint")
    init = Image.open(os.path.join(fx, "init.png")).convert("RGB")
    masks = {k: Image.open(os.path.join(fx, f"mask_{k}.png")) for k in ("ellipse", "soft", "alpha")}
    models, tensors = {}, {}
    for c in CASES:
        if c["arch"] not in models:
            models[c["arch"]] = X.load(c["arch"], tokenize_line)
        with torch.no_grad():
            if c["kind"] == "hires":
                lat, img = run_hires(c, models[c["arch"]])
            elif c["kind"] == "sd_upscale":
                lat, img = run_sd_upscale(c, models[c["arch"]])
            else:
                lat, img = run_inpaint(c, models[c["arch"]], init, masks)
        if c["kind"] == "hires" and c["hr_resize_x"] and c["hr_resize_y"]:
            # the counterfactual: the second pass conditioned at the cropped size (what A1111 does not do)
            tw, th, tx, ty = H.target(c)
            with torch.no_grad():
                other, _ = run_hires(c, models[c["arch"]], (tw - 8 * tx, th - 8 * ty))
            tensors[c["name"] + "/latents_conditioned_at_crop"] = other.contiguous()
        tensors[c["name"] + "/latents"] = lat.contiguous()
        tensors[c["name"] + "/image"] = torch.from_numpy(np.ascontiguousarray(img))
        print(c["name"], tuple(img.shape), float(lat.std()), float(img.mean()))
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "reference.safetensors"))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_sdxl_hires_fixtures.py", "cases": CASES}, f, indent=1)


if __name__ == "__main__":
    main()
