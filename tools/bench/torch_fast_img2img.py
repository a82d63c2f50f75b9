#!/usr/bin/env python3
"""PyTorch/diffusers side of run.sh's fast-img2img-512 line: 512x512 img2img at strength 0.5,
4 steps (2 U-Net calls here; Sumi, following A1111, runs 3), diffusers' LCMScheduler,
guidance 1 (diffusers then runs no uncond pass), the LCM-LoRA-shaped file merged into the
U-Net (W += alpha/rank · up·down, diffusers' fuse_lora; done here by hand, as diffusers' own
loader needs the peft package), the full VAE to encode and TAESD to decode (as Sumi with
--taesd-decoder); the full-size random SD1.5 of make_full_sd15.py, f32, 2 threads.

Usage: torch_fast_img2img.py DIFFUSERS_DIR INIT_IMAGE TOKENIZER_DIR LORA TAESD_DECODER
       -> one JSON line
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from diffusers import AutoencoderKL, LCMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from taesd_check import decoder  # noqa: E402


def merge_lora(unet, path):
    """Adds every `lora_unet_<module>` of the file to the module's weight; refuses a file with
    keys that name no module."""
    sd = load_file(path)
    modules = {"lora_unet_" + n.replace(".", "_"): m for n, m in unet.named_modules()}
    bases = {k.split(".", 1)[0] for k in sd}
    missing = sorted(b for b in bases if b not in modules)
    if missing:
        sys.exit(f"{path}: {len(missing)} modules not in the U-Net, e.g. {missing[:3]}")
    with torch.no_grad():
        for b in bases:
            w = modules[b].weight
            down, up = sd[b + ".lora_down.weight"].float(), sd[b + ".lora_up.weight"].float()
            alpha = sd[b + ".alpha"].float().item() if b + ".alpha" in sd else down.shape[0]
            delta = up.flatten(1) @ down.flatten(1) * (alpha / down.shape[0])
            w += delta.reshape(w.shape).to(w.dtype)
    return len(bases)


def main():
    d, init, tok, lora, taesd = sys.argv[1:6]
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), torch_dtype=torch.float32)
    merged = merge_lora(unet, lora)
    dec = decoder(4, False)
    dec.load_state_dict(load_file(taesd))
    pipe = StableDiffusionImg2ImgPipeline(
        vae=AutoencoderKL.from_pretrained(os.path.join(d, "vae"), torch_dtype=torch.float32),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(d, "text_encoder"), torch_dtype=torch.float32),
        tokenizer=CLIPTokenizer.from_pretrained(tok),
        unet=unet,
        scheduler=LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rows = []  # the batch of every U-Net call
    unet.register_forward_pre_hook(lambda _m, args: rows.append(int(args[0].shape[0])))
    load = time.perf_counter() - t0
    img = Image.open(init).convert("RGB").resize((512, 512))
    t1 = time.perf_counter()
    with torch.inference_mode():
        latents = pipe(prompt="an anime portrait", image=img, strength=0.5, num_inference_steps=4,
                       guidance_scale=1.0, output_type="latent",
                       generator=torch.Generator().manual_seed(1)).images
        pixels = dec(latents).clamp(0, 1)
    wall = time.perf_counter() - t1
    Image.fromarray((pixels[0].permute(1, 2, 0) * 255).round().byte().numpy())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"load_s": load, "wall_s": wall, "peak_rss_kib": rss, "lora_modules": merged,
                      "unet_batches": rows}))


if __name__ == "__main__":
    main()
