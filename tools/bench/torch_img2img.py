#!/usr/bin/env python3
"""PyTorch/diffusers side of the end-to-end img2img measurement: 512x512, strength 0.75,
20 steps, DPM++ 2M Karras (diffusers' DPMSolverMultistepScheduler with Karras sigmas), CFG 7,
on the full-size random SD1.5 written by make_full_sd15.py; f32, 2 threads.

Usage: torch_img2img.py DIFFUSERS_DIR INIT_IMAGE TOKENIZER_DIR  -> one JSON line
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline,
                       UNet2DConditionModel)
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer


def main():
    d, init, tok = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    pipe = StableDiffusionImg2ImgPipeline(
        vae=AutoencoderKL.from_pretrained(os.path.join(d, "vae"), torch_dtype=torch.float32),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(d, "text_encoder"), torch_dtype=torch.float32),
        tokenizer=CLIPTokenizer.from_pretrained(tok),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), torch_dtype=torch.float32),
        scheduler=DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                              algorithm_type="dpmsolver++", solver_order=2,
                                              use_karras_sigmas=True),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0
    img = Image.open(init).convert("RGB").resize((512, 512))
    t1 = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt="an anime portrait", negative_prompt="blurry", image=img, strength=0.75,
             num_inference_steps=20, guidance_scale=7.0, generator=torch.Generator().manual_seed(1))
    wall = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"load_s": load, "wall_s": wall, "peak_rss_kib": rss}))


if __name__ == "__main__":
    main()
