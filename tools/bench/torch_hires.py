#!/usr/bin/env python3
"""PyTorch/diffusers side of the hires-fix measurement (tools/bench/hires.sh): the same work as
`sumi txt2img --hr-scale 2 --hr-upscaler Latent` on the full-size random SD1.5 written by
make_full_sd15.py — a 512x512 first pass (Euler, STEPS steps, CFG 7), A1111's "Latent" upscale
(bilinear, no antialias) of the latents to 128x128, and a second pass of HR_STEPS steps at
1024x1024 (A1111's hires pass with hr_second_pass_steps=HR_STEPS and denoising 0.5 runs exactly
HR_STEPS steps: diffusers' img2img with 2*HR_STEPS steps at strength 0.5 does the same count),
then the VAE decode at 1024x1024; f32, 2 threads.

Usage: torch_hires.py DIFFUSERS_DIR TOKENIZER_DIR STEPS HR_STEPS  -> one JSON line
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline,
                       StableDiffusionPipeline, UNet2DConditionModel)
from transformers import CLIPTextModel, CLIPTokenizer


def main():
    d, tok, steps, hr_steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    parts = dict(
        vae=AutoencoderKL.from_pretrained(os.path.join(d, "vae"), torch_dtype=torch.float32),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(d, "text_encoder"), torch_dtype=torch.float32),
        tokenizer=CLIPTokenizer.from_pretrained(tok),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), torch_dtype=torch.float32),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    first = StableDiffusionPipeline(**parts)
    second = StableDiffusionImg2ImgPipeline(**parts)
    for p in (first, second):
        p.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0
    calls = []
    parts["unet"].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[-1]))
    t1 = time.perf_counter()
    args = dict(prompt="an anime portrait", negative_prompt="blurry", guidance_scale=7.0)
    with torch.inference_mode():
        lat = first(**args, width=512, height=512, num_inference_steps=steps, output_type="latent",
                    generator=torch.Generator().manual_seed(1)).images
        lat = F.interpolate(lat, size=(128, 128), mode="bilinear", antialias=False)
        second(**args, image=lat, strength=0.5, num_inference_steps=2 * hr_steps,
               generator=torch.Generator().manual_seed(1))
    wall = time.perf_counter() - t1
    assert calls == [64] * steps + [128] * hr_steps, calls
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"load_s": load, "wall_s": wall, "peak_rss_kib": rss}))


if __name__ == "__main__":
    main()
