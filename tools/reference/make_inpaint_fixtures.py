#!/usr/bin/env python3
"""Reference for crates/sumi-pipeline/tests/inpaint_parity.rs: img2img with a mask on the tiny
SD1 and SD1-inpainting models, restating A1111 v1.10.1's processing
(modules/processing.py `StableDiffusionProcessingImg2Img.init` and `.sample`,
`create_binary_mask`, `apply_overlay`; modules/masking.py; sd_samplers_cfg_denoiser.py's blend
with `mask_before_denoising` off, as for k-diffusion samplers) with the Pillow 9.5.0 that A1111
pins and OpenCV's bit-exact 8-bit Gaussian blur.

Setup (Pillow 9.5.0 and OpenCV beside the torch environment, first on sys.path):
    tools/reference/.venv/bin/pip install --no-deps --target tools/reference/.pil95 \
        pillow==9.5.0 opencv-python-headless==4.8.0.76
Usage:
    tools/reference/.venv/bin/python tools/reference/make_inpaint_fixtures.py \
        /tmp/tok_sd1 fixtures/inpaint
  (/tmp/tok_sd1 from make_clip_tokenizer.py --pad sd1)

As in make_generate_fixtures.py, Sumi's documented choice is followed where A1111 draws from an
unseeded generator: the VAE encodes to its posterior *mean* (also for the inpainting models'
masked-image conditioning).

Writes: init.png and the masks (inputs), out/<case>.png (the final pictures), cases.json (every
case's settings, the infotext keys A1111 adds, and sha256 digests of the intermediate images:
the mask at the processing size, the overlay, the picture the VAE encodes, the latent mask),
reference.safetensors (final latents), and ops.json with exact checks of the pixel operations
(OpenCV blur, Pillow's Gaussian blur, alpha_composite, fill) on small inputs in ops/.
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PIL95", os.path.join(HERE, ".pil95")))
sys.path.insert(1, HERE)

import PIL  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter, ImageOps  # noqa: E402

assert PIL.__version__ == "9.5.0", PIL.__version__

from k_diffusion import external, sampling as K  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

from make_generate_fixtures import ARCH_SEED, LDM, CFGDenoiser, encode  # noqa: E402
from make_pipeline_fixtures import resize_image  # noqa: E402
from make_tiny_models import build  # noqa: E402
from sampling_a1111_fixtures import ImageRNG  # noqa: E402

torch.set_num_threads(2)
PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"
INIT_W, INIT_H = 144, 128  # the source; processing is at 128 x 128
SIZE = 128


def sha(im):
    return hashlib.sha256(im.tobytes()).hexdigest()


# --- A1111 v1.10.1 modules/processing.py and modules/masking.py, restated ---

def create_binary_mask(image, round=True):
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        if round:
            image = image.split()[-1].convert("L").point(lambda x: 255 if x > 128 else 0)
        else:
            image = image.split()[-1].convert("L")
    else:
        image = image.convert("L")
    return image


def get_crop_region_v2(mask, pad=0):
    if box := mask.getbbox():
        x1, y1, x2, y2 = box
        return (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])) if pad else box


def expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    x1, y1, x2, y2 = crop_region
    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_crop_region > ratio_processing:
        desired_height = (x2 - x1) / ratio_processing
        desired_height_diff = int(desired_height - (y2 - y1))
        y1 -= desired_height_diff // 2
        y2 += desired_height_diff - desired_height_diff // 2
        if y2 >= image_height:
            diff = y2 - image_height
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        if y2 >= image_height:
            y2 = image_height
    else:
        desired_width = (y2 - y1) * ratio_processing
        desired_width_diff = int(desired_width - (x2 - x1))
        x1 -= desired_width_diff // 2
        x2 += desired_width_diff - desired_width_diff // 2
        if x2 >= image_width:
            diff = x2 - image_width
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        if x2 >= image_width:
            x2 = image_width
    return x1, y1, x2, y2


def fill(image, mask):
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def apply_overlay(image, paste_loc, overlay):
    if paste_loc is not None:
        x, y, w, h = paste_loc
        base_image = Image.new("RGBA", (overlay.width, overlay.height))
        image = resize_image(1, image, w, h)
        base_image.paste(image, (x, y))
        image = base_image
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB")


def blur_mask(image_mask, bx, by):
    if bx > 0:
        np_mask = np.array(image_mask)
        kernel_size = 2 * int(2.5 * bx + 0.5) + 1
        np_mask = cv2.GaussianBlur(np_mask, (kernel_size, 1), bx)
        image_mask = Image.fromarray(np_mask)
    if by > 0:
        np_mask = np.array(image_mask)
        kernel_size = 2 * int(2.5 * by + 0.5) + 1
        np_mask = cv2.GaussianBlur(np_mask, (1, kernel_size), by)
        image_mask = Image.fromarray(np_mask)
    return image_mask


def img2img_init(c, init_img, mask_img):
    """`StableDiffusionProcessingImg2Img.init` up to the VAE, for one init image: returns the
    picture to encode, image_mask, latmask (numpy), the overlay, paste_to, and the extra
    generation params in insertion order."""
    extra = {}
    width, height = SIZE, SIZE
    crop_region = None
    paste_to = None
    image_mask = create_binary_mask(mask_img, round=c["round"])
    if c["invert"]:
        image_mask = ImageOps.invert(image_mask)
        extra["Mask mode"] = "Inpaint not masked"
    image_mask = blur_mask(image_mask, c["blur_x"], c["blur_y"])
    if c["blur_x"] > 0 or c["blur_y"] > 0:
        mb = c["blur_x"] if c["blur_x"] == c["blur_y"] else None
        if mb is not None:
            extra["Mask blur"] = mb
    if c["full_res"]:
        mask_for_overlay = image_mask
        mask = image_mask.convert("L")
        crop_region = get_crop_region_v2(mask, c["padding"])
        if crop_region:
            crop_region = expand_crop_region(crop_region, width, height, mask.width, mask.height)
            x1, y1, x2, y2 = crop_region
            mask = mask.crop(crop_region)
            image_mask = resize_image(2, mask, width, height)
            paste_to = (x1, y1, x2 - x1, y2 - y1)
            extra["Inpaint area"] = "Only masked"
            extra["Masked area padding"] = c["padding"]
        else:
            crop_region = None
            image_mask = None
            mask_for_overlay = None
    else:
        image_mask = resize_image(c["resize_mode"], image_mask, width, height)
        np_mask = np.array(image_mask)
        np_mask = np.clip((np_mask.astype(np.float32)) * 2, 0, 255).astype(np.uint8)
        mask_for_overlay = Image.fromarray(np_mask)
    latent_mask = image_mask

    image = init_img  # already flattened RGB
    if crop_region is None:
        image = resize_image(c["resize_mode"], image, width, height)
    overlay = None
    if image_mask is not None:
        if mask_for_overlay.size != (image.width, image.height):
            mask_for_overlay = resize_image(c["resize_mode"], mask_for_overlay, image.width, image.height)
        image_masked = Image.new("RGBa", (image.width, image.height))
        image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
        overlay = image_masked.convert("RGBA")
    if crop_region is not None:
        image = image.crop(crop_region)
        image = resize_image(2, image, width, height)
    if image_mask is not None:
        if c["fill"] != 1:
            image = fill(image, latent_mask)
            if c["fill"] == 0:
                extra["Masked content"] = "fill"
    latmask = None
    if image_mask is not None:
        lm = latent_mask.convert("RGB").resize((width // 8, height // 8))
        latmask = np.moveaxis(np.array(lm, dtype=np.float32), 2, 0) / 255
        latmask = latmask[0]
        if c["round"]:
            latmask = np.around(latmask)
        if c["fill"] == 2:
            extra["Masked content"] = "latent noise"
        elif c["fill"] == 3:
            extra["Masked content"] = "latent nothing"
    return image, image_mask, latmask, overlay, paste_to, extra


class CFGDenoiserMasked(CFGDenoiser):
    """A1111's CFGDenoiser for one prompt, with the latent blend after the guidance."""

    def __init__(self, inner, cond, uncond, cfg, image_cond, init_latent, mask, nmask):
        super().__init__(inner, cond, uncond, cfg, image_cond)
        self.init_latent, self.mask, self.nmask = init_latent, mask, nmask

    def __call__(self, x, sigma, **kw):
        denoised = super().__call__(x, sigma, **kw)
        if self.mask is not None:
            denoised = denoised * self.nmask + self.init_latent * self.mask
        return denoised


def timestep_run(c, unet, cond, uncond, noise, init_latent, image_cond, mask, nmask):
    """A1111's timestep samplers (sd_samplers_timesteps.py) on img2img: DDIM timesteps, the
    source noised to timesteps[t_enc] in the VP scale, CFG on ε at integer t, and the
    CFGDenoiserTimesteps blend (`mask_before_denoising`): the model sees
    init_latent · mask + nmask · x, the sampler keeps its own x."""
    from sampling_sampler_fixtures import ddim_a1111, plms_a1111
    from sampling_schedule_fixtures import FakeLDM
    ac = FakeLDM().alphas_cumprod
    steps = c["steps"]
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    t_enc = int(min(c["strength"], 0.999) * steps)
    a = ac[timesteps[t_enc]]
    x = init_latent * torch.sqrt(a) + noise * torch.sqrt(1 - a)
    timesteps = timesteps[:t_enc]
    b = noise.shape[0]

    def eps_model(x, t):
        if mask is not None:
            x = init_latent * mask + nmask * x
        tt = torch.full((2 * b,), float(t))
        ctx = torch.cat([cond.expand(b, -1, -1), uncond.expand(b, -1, -1)])
        x_in = torch.cat([x, x])
        if image_cond is not None:
            x_in = torch.cat([x_in, torch.cat([image_cond, image_cond])], dim=1)
        out = unet(x_in, tt, encoder_hidden_states=ctx).sample
        e_c, e_u = out[:b], out[b:]
        return e_u + (e_c - e_u) * c["cfg"]

    if c["sampler"] == "DDIM":
        return ddim_a1111(eps_model, x, timesteps, ac, 0.0, lambda _: None)
    return plms_a1111(eps_model, x, timesteps, ac, lambda _: None)


def vae_encode(vae, x):
    return vae.encode(x).latent_dist.mean * 0.18215


_MODELS = {}


def run(c, tok, init_img, masks):
    if c["arch"] not in _MODELS:
        _MODELS[c["arch"]] = build(c["arch"], ARCH_SEED[c["arch"]])
    unet, vae, te = _MODELS[c["arch"]]
    inner = external.CompVisDenoiser(LDM(unet))
    mask_img = masks[c["mask"]]
    image, image_mask, latmask, overlay, paste_to, extra = img2img_init(c, init_img, mask_img)
    bs = c["batch"]
    with torch.no_grad():
        cond = encode(te, tok, PROMPT, False)
        uncond = encode(te, tok, NEGATIVE, False)
        img = np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0)
        batch = torch.from_numpy(np.expand_dims(img, 0).repeat(bs, axis=0))
        init_latent = vae_encode(vae, batch * 2 - 1)
        seeds = [c["seed"] + i for i in range(bs)]
        shape = (4, SIZE // 8, SIZE // 8)
        mask = nmask = None
        if image_mask is not None:
            lm = np.tile(latmask[None], (4, 1, 1))
            mask = torch.asarray(1.0 - lm)
            nmask = torch.asarray(lm)
            if c["fill"] == 2:
                init_latent = init_latent * mask + ImageRNG(c["rng"], shape, seeds).next() * nmask
            elif c["fill"] == 3:
                init_latent = init_latent * mask
        image_cond = None
        if c["arch"] == "sd1-inpaint":
            source = batch * 2 - 1
            if image_mask is not None:
                cm = np.array(image_mask.convert("L")).astype(np.float32) / 255.0
                cm = torch.from_numpy(cm[None, None])
                if c["round"]:
                    cm = torch.round(cm)
            else:
                cm = source.new_ones(1, 1, *source.shape[-2:])
            ci = torch.lerp(source, source * (1.0 - cm), c["mask_weight"])
            ci = vae_encode(vae, ci)
            cm = torch.nn.functional.interpolate(cm, size=init_latent.shape[-2:])
            cm = cm.expand(ci.shape[0], -1, -1, -1)
            image_cond = torch.cat([cm, ci], dim=1)
        rng = ImageRNG(c["rng"], shape, seeds)
        noise = rng.next()
        steps = c["steps"]
        if c["scheduler"] == "karras":
            sigmas = K.get_sigmas_karras(steps, inner.sigmas[0].item(), inner.sigmas[-1].item())
        else:
            sigmas = inner.get_sigmas(steps)
        t_enc = int(min(c["strength"], 0.999) * steps)
        run_sigmas = sigmas[steps - t_enc - 1:]
        x = init_latent + noise * run_sigmas[0]
        den = CFGDenoiserMasked(inner, cond, uncond, c["cfg"], image_cond, init_latent, mask, nmask)
        if c["sampler"] in ("DDIM", "PLMS"):
            out = timestep_run(c, unet, cond, uncond, noise, init_latent, image_cond, mask, nmask)
        elif c["sampler"] == "Euler":
            out = K.sample_euler(den, x, run_sigmas, disable=True)
        elif c["sampler"] == "DPM++ 2M":
            out = K.sample_dpmpp_2m(den, x, run_sigmas, disable=True)
        else:
            raise ValueError(c["sampler"])
        if mask is not None:
            out = out * nmask + init_latent * mask
        dec = vae.decode(out / 0.18215).sample
        dec = torch.clamp((dec + 1.0) / 2.0, min=0.0, max=1.0)
        dec = (255.0 * dec.permute(0, 2, 3, 1).numpy()).astype(np.uint8)
    pictures = []
    for i in range(bs):
        pic = Image.fromarray(dec[i])
        if overlay is not None:
            pic = apply_overlay(pic, paste_to, overlay)
        pictures.append(pic)
    digests = {
        "image": sha(image),
        "image_mask": sha(image_mask.convert("L")) if image_mask is not None else None,
        "overlay": sha(overlay) if overlay is not None else None,
        "latent_mask": hashlib.sha256(latmask.astype(np.float32).tobytes()).hexdigest() if latmask is not None else None,
    }
    if c["arch"] == "sd1-inpaint":
        extra = {"Conditional mask weight": float(c["mask_weight"]), **extra}
    return out.contiguous(), pictures, digests, extra


def make_inputs(out):
    from skimage import data
    init = Image.fromarray(data.astronaut()).resize((INIT_W, INIT_H), Image.LANCZOS)
    init.save(os.path.join(out, "init.png"))
    # a hard ellipse (L), a soft one (L, grey levels: rounding matters), an RGBA alpha mask
    m = Image.new("L", (INIT_W, INIT_H), 0)
    ImageDraw.Draw(m).ellipse((40, 30, 100, 80), fill=255)
    m.save(os.path.join(out, "mask_ellipse.png"))
    y, x = np.mgrid[0:INIT_H, 0:INIT_W]
    soft = np.clip(255 - np.hypot(x - 90, y - 60) * 6, 0, 255).astype(np.uint8)
    Image.fromarray(soft, "L").save(os.path.join(out, "mask_soft.png"))
    a = np.zeros((INIT_H, INIT_W, 4), np.uint8)
    a[..., :3] = 30
    a[20:70, 60:130, 3] = 200
    a[40:50, 70:90, 3] = 100  # below the threshold: a hole
    Image.fromarray(a, "RGBA").save(os.path.join(out, "mask_alpha.png"))
    init = Image.open(os.path.join(out, "init.png")).convert("RGB")
    masks = {k: Image.open(os.path.join(out, f"mask_{k}.png")) for k in ("ellipse", "soft", "alpha")}
    for v in masks.values():
        v.load()
    return init, masks


def cases():
    out = []
    i = 0
    mask_names = ("ellipse", "soft", "alpha")
    for arch in ("sd1", "sd1-inpaint"):
        for fill_mode in range(4):
            for full_res in (False, True):
                for invert in (False, True):
                    for sampler, sched in (("Euler", None), ("DPM++ 2M", "karras")):
                        name = f"{arch}_{['fill', 'original', 'latent_noise', 'latent_nothing'][fill_mode]}_" \
                               f"{'only_masked' if full_res else 'whole'}_{'inv' if invert else 'mask'}_" \
                               f"{'euler' if sampler == 'Euler' else 'dpmpp2m_karras'}"
                        out.append(dict(
                            name=name, arch=arch, fill=fill_mode, full_res=full_res, invert=invert,
                            sampler=sampler, scheduler=sched, mask=mask_names[i % 3],
                            blur_x=4, blur_y=4, padding=8, round=True, resize_mode=i % 3,
                            mask_weight=1.0, seed=500 + i, rng="CPU" if i % 2 == 0 else "NV",
                            steps=6, cfg=7.0, strength=0.75, batch=1))
                        i += 1
    # extras: batch 2 with latent noise (per-image seeds), unequal blur, no blur, unrounded
    # masks, the inpainting model's mask weight below and at 0.5, an inverted blank-box case
    out.append(dict(out[4], name="sd1_latent_noise_batch2", fill=2, batch=2, seed=900))
    out.append(dict(out[0], name="sd1_blur_2x6", blur_x=2, blur_y=6, seed=901))
    out.append(dict(out[0], name="sd1_blur_0", blur_x=0, blur_y=0, seed=902))
    out.append(dict(out[2], name="sd1_soft_unrounded", mask="soft", round=False, seed=903))
    out.append(dict(out[34], name="sd1inpaint_weight_0.3", mask_weight=0.3, seed=904))
    out.append(dict(out[34], name="sd1inpaint_weight_0.5", mask_weight=0.5, seed=905))
    out.append(dict(out[4], name="sd1_only_masked_pad_0", padding=0, seed=906))
    # A1111's timestep samplers blend the input instead of the prediction
    for arch in ("sd1", "sd1-inpaint"):
        for sampler in ("DDIM", "PLMS"):
            for full_res in (False, True):
                out.append(dict(out[0], name=f"{arch}_{sampler.lower()}_{'only_masked' if full_res else 'whole'}",
                                arch=arch, sampler=sampler, scheduler=None, full_res=full_res,
                                fill=len(out) % 4, mask=("ellipse", "alpha")[len(out) % 2],
                                seed=1000 + len(out), rng="CPU"))
    return out


def ops_checks(out):
    """Exact checks of the pixel operations on small inputs."""
    os.makedirs(os.path.join(out, "ops"), exist_ok=True)
    rng = np.random.default_rng(7)
    checks = []
    # OpenCV blur: random masks, sigmas incl. kernels wider than the mask (reflections)
    for (w, h) in ((37, 23), (5, 3), (1, 9)):
        m = (rng.random((h, w)) > 0.6).astype(np.uint8) * 255
        m[rng.random((h, w)) > 0.9] = 77
        name = f"mask_{w}x{h}.png"
        Image.fromarray(m, "L").save(os.path.join(out, "ops", name))
        for s in (1, 2, 3, 4, 7, 12, 40):
            for axis in ("x", "y"):
                k = 2 * int(2.5 * s + 0.5) + 1
                r = cv2.GaussianBlur(m, (k, 1) if axis == "x" else (1, k), s)
                checks.append(dict(op="opencv_blur", input=name, sigma=s, axis=axis,
                                   sha256=hashlib.sha256(r.tobytes()).hexdigest()))
    # Pillow: GaussianBlur on RGBa, alpha_composite, fill
    for (w, h) in ((33, 17), (4, 7)):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        name = f"rgb_{w}x{h}.png"
        Image.fromarray(a, "RGB").save(os.path.join(out, "ops", name))
        m = (rng.random((h, w)) * 300).clip(0, 255).astype(np.uint8)
        mname = f"grey_{w}x{h}.png"
        Image.fromarray(m, "L").save(os.path.join(out, "ops", mname))
        im = Image.fromarray(a, "RGB")
        mk = Image.fromarray(m, "L")
        masked = Image.new("RGBa", im.size)
        masked.paste(im.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mk))
        for radius in (256, 64, 16, 4, 2, 1.5, 0):
            b = masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
            checks.append(dict(op="pillow_blur", input=name, mask=mname, radius=radius, sha256=sha(b)))
        checks.append(dict(op="fill", input=name, mask=mname, sha256=sha(fill(im, mk))))
        ov = masked.convert("RGBA")
        base = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        bname = f"base_{w}x{h}.png"
        base.save(os.path.join(out, "ops", bname))
        comp = base.convert("RGBA")
        comp.alpha_composite(ov)
        checks.append(dict(op="overlay", input=name, mask=mname, base=bname, sha256=sha(comp.convert("RGB"))))
    with open(os.path.join(out, "ops.json"), "w") as f:
        json.dump(checks, f, indent=1)


def main():
    tok = CLIPTokenizer.from_pretrained(sys.argv[1])
    out = sys.argv[2]
    os.makedirs(os.path.join(out, "out"), exist_ok=True)
    init, masks = make_inputs(out)
    ops_checks(out)
    tensors = {}
    all_cases = cases()
    for c in all_cases:
        lat, pics, digests, extra = run(c, tok, init, masks)
        tensors[c["name"] + "/latents"] = lat
        for i, p in enumerate(pics):
            p.save(os.path.join(out, "out", f"{c['name']}_{i}.png"), optimize=True)
        c["digests"] = digests
        c["extra_params"] = [[k, str(v)] for k, v in extra.items()]
        print(c["name"], pics[0].size, float(lat.std()))
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"prompt": PROMPT, "negative_prompt": NEGATIVE, "size": SIZE, "cases": all_cases}, f, indent=1)


if __name__ == "__main__":
    main()
