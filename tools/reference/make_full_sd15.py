#!/usr/bin/env python3
"""A full-size SD1.5-architecture checkpoint with random weights (diffusers' default init, then
f16), for load, memory and speed measurements — never committed:

  OUT_DIR/sd15_random.safetensors   single-file LDM layout (as A1111/civitai files), f16
  OUT_DIR/diffusers/{unet,vae,text_encoder}/...   the same weights as a diffusers folder

Usage: make_full_sd15.py OUT_DIR
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
from ldm_keys import canonical_clip_keys, diffusers_to_ldm  # noqa: E402


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
        attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(  # its vae/config.json
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512)
    te = CLIPTextModel(CLIPTextConfig(  # openai/clip-vit-large-patch14 text config
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
        num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=768, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    with torch.no_grad():  # the zero-initialised output convs would make outputs trivial
        for m in (unet, vae):
            for n, p in m.named_parameters():
                if p.abs().max() == 0 and p.ndim > 1:
                    p.normal_(0, 0.02)
    half = lambda sd: {k: v.detach().half().contiguous() for k, v in sd.items()}
    d = os.path.join(out, "diffusers")
    for name, m in (("unet", unet), ("vae", vae)):
        os.makedirs(os.path.join(d, name), exist_ok=True)
        m.save_config(os.path.join(d, name))
        save_file(half(m.state_dict()), os.path.join(d, name, "diffusion_pytorch_model.safetensors"))
    os.makedirs(os.path.join(d, "text_encoder"), exist_ok=True)
    te.config.save_pretrained(os.path.join(d, "text_encoder"))
    te_sd = {k: v for k, v in canonical_clip_keys(te.state_dict()).items()}
    save_file(half(te_sd), os.path.join(d, "text_encoder", "model.safetensors"), metadata={"format": "pt"})
    ldm = diffusers_to_ldm(unet.state_dict(), vae.state_dict(), te.state_dict())
    save_file(half(ldm), os.path.join(out, "sd15_random.safetensors"))
    print("wrote", out, sum(p.numel() for m in (unet, vae, te) for p in m.parameters()), "parameters")


if __name__ == "__main__":
    main()
