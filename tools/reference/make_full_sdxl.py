#!/usr/bin/env python3
"""A full-size SDXL base U-Net with random weights, for speed and memory measurements
(tools/bench/run.sh's unet-sdxl-* lines) — never committed:

  OUT_DIR/diffusers/unet/{config.json, diffusion_pytorch_model.safetensors}
      diffusers' UNet2DConditionModel with stabilityai/stable-diffusion-xl-base-1.0's
      unet/config.json (restated below: 2.57 B parameters), stored f16 (~5.1 GB)
  OUT_DIR/diffusers/{vae,text_encoder,text_encoder_2,scheduler}/, model_index.json
      TINY placeholders (a few MB) so that the folder is an SDXL diffusers folder Sumi opens
      as a checkpoint; the U-Net benchmark never runs them. Their sizes are not SDXL's.

The U-Net's tensors are written one at a time straight into the safetensors file (PyTorch's
default initialisation: uniform ±1/sqrt(fan_in) for weights and biases, norms 1 and 0, drawn
from a seeded generator), so this script never holds the 10 GB f32 model: its peak RSS stays
well under 1 GB and it needs ~5.2 GB of disk.

Usage: make_full_sdxl.py OUT_DIR
"""
import json
import math
import os
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the constructor's arguments that
# differ from diffusers' defaults, plus the ones that define the architecture)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn", transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5,
    act_fn="silu", flip_sin_to_cos=True, freq_shift=0, upcast_attention=False,
)


def init_tensor(name, shape, shapes, gen):
    """PyTorch's default initialisation of the parameter `name`, drawn from `gen`, as f16."""
    leaf = name.rsplit(".", 2)
    is_norm = "norm" in leaf[-2]
    if len(shape) == 1 and is_norm:
        return (torch.ones if name.endswith(".weight") else torch.zeros)(shape, dtype=torch.float16)
    weight = shapes.get(name[: -len("bias")] + "weight", shape) if name.endswith(".bias") else shape
    fan_in = math.prod(weight[1:]) if len(weight) > 1 else weight[0]
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    t = torch.rand(shape, generator=gen, dtype=torch.float32).mul_(2 * bound).sub_(bound)
    return t.half()


def write_unet(unet_dir):
    """Writes the U-Net's config and its f16 safetensors file, one tensor at a time."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
    unet.save_config(unet_dir)
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    header, offset = {}, 0
    for k, s in shapes.items():
        n = math.prod(s) * 2
        header[k] = {"dtype": "F16", "shape": list(s), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    gen = torch.Generator().manual_seed(0)
    path = os.path.join(unet_dir, "diffusion_pytorch_model.safetensors")
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for k, s in shapes.items():
            f.write(init_tensor(k, s, shapes, gen).contiguous().numpy().tobytes())
    os.replace(path + ".part", path)
    return sum(math.prod(s) for s in shapes.values()), offset


def clip_config(hid, gelu, pad):
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=hid, intermediate_size=4 * hid, num_attention_heads=hid // 64,
        num_hidden_layers=2, max_position_embeddings=77, hidden_act="gelu" if gelu else "quick_gelu",
        layer_norm_eps=1e-5, projection_dim=hid, bos_token_id=49406, eos_token_id=49407, pad_token_id=pad)


def write_placeholders(d):
    """Tiny VAE, text encoders, scheduler config and model_index.json (never run by the bench)."""
    torch.manual_seed(0)
    half = lambda sd: {k: v.detach().half().contiguous() for k, v in sd.items()
                       if not k.endswith("position_ids")}
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
        layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=64,
        scaling_factor=0.13025)
    os.makedirs(os.path.join(d, "vae"), exist_ok=True)
    vae.save_config(os.path.join(d, "vae"))
    save_file(half(vae.state_dict()), os.path.join(d, "vae", "diffusion_pytorch_model.safetensors"))
    for sub, m in (("text_encoder", CLIPTextModel(clip_config(64, False, 49407))),
                   ("text_encoder_2", CLIPTextModelWithProjection(clip_config(128, True, 0)))):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        m.config.to_json_file(os.path.join(d, sub, "config.json"))
        save_file(half(m.state_dict()), os.path.join(d, sub, "model.safetensors"), metadata={"format": "pt"})
    os.makedirs(os.path.join(d, "scheduler"), exist_ok=True)
    with open(os.path.join(d, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                   "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                   "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading"}, f, indent=1)
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionXLPipeline",
                   "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                   "text_encoder": ["transformers", "CLIPTextModel"],
                   "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                   "force_zeros_for_empty_prompt": True}, f, indent=1)


def main():
    d = os.path.join(sys.argv[1], "diffusers")
    os.makedirs(os.path.join(d, "unet"), exist_ok=True)
    torch.set_num_threads(2)
    write_placeholders(d)
    params, size = write_unet(os.path.join(d, "unet"))
    print(f"wrote {d}: U-Net {params} parameters, {size / 1e9:.2f} GB f16 (placeholders tiny)")


if __name__ == "__main__":
    main()
