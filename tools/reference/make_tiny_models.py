#!/usr/bin/env python3
"""Tiny random SD1.x / SD1.x-inpainting / SD2.x-eps / SD2.x-v models with the real
architectures, written in the diffusers folder layout and the single-file LDM layout (f16
storage), plus reference outputs computed in f32 by diffusers/transformers for the parity
tests in crates/sumi-models.

Rules the tiny models follow (the real architectures' rules, so the loader's default path is
what the tests prove): SD1 U-Net 8 heads per transformer; SD2 U-Net 64-channel heads with
linear proj_in/out; CLIP and OpenCLIP text encoders 64-wide heads; SD1 CLIP quick_gelu, SD2
OpenCLIP gelu; the SD2 LDM file keeps one more (unused, "penultimate") resblock than the
diffusers text encoder; SD2-v is marked by `modelspec.prediction_type` in the LDM file and by
the scheduler config in the diffusers folder; SD2-eps is left for A1111's U-Net test.

Weights are not random draws but synth_weights.synth(canonical name) (f16 values), so what is
committed per model is a manifest — for every file of both layouts, each tensor's key, shape,
the canonical tensors it is made of, and a checksum — plus the small config files and the
reference outputs; the tests rebuild the checkpoint files from it (crates/sumi-weights
`synth`).  The LDM file is checked against diffusers' own LDM->diffusers converters.

Usage: make_tiny_models.py OUT_DIR   (writes OUT_DIR/<arch>/{manifest.json, reference.safetensors,
       diffusers/*/config.json ...}; with --files also the weight files themselves)
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from ldm_keys import canonical_clip_keys, unet_to_ldm, vae_to_ldm
from synth_weights import checksum, synth

torch.set_num_threads(2)
HID = 64           # text encoder width (= U-Net context width)
CLIP_LAYERS = 3    # transformers-layout layers; open_clip files carry one more
ARCHS = {
    "sd1": dict(family="sd1", in_ch=4, vocab=49408),
    "sd1-inpaint": dict(family="sd1", in_ch=9, vocab=49408),
    "sd2": dict(family="sd2", in_ch=4, vocab=49408),
    "sd2-v": dict(family="sd2", in_ch=4, vocab=49408),
}


def canonical(prefix, key):
    if prefix == "text_encoder.":
        key = key[len("text_model."):] if key.startswith("text_model.") else key
    return prefix + key


def load_synth(module, prefix):
    with torch.no_grad():
        for k, p in module.state_dict().items():
            if k.endswith("position_ids"):
                continue
            p.copy_(torch.from_numpy(synth(canonical(prefix, k), list(p.shape)).astype(np.float32)))
    return module.eval()


def build(arch, seed):
    a = ARCHS[arch]
    sd2 = a["family"] == "sd2"
    chans = (64, 64, 64, 64)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=a["in_ch"], out_channels=4, block_out_channels=chans,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=HID,
        # diffusers' attention_head_dim is the head *count*: SD1 8, SD2 channels/64
        attention_head_dim=[c // 64 for c in chans] if sd2 else 8,
        use_linear_projection=sd2, norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=64,
        scaling_factor=0.18215,
    )
    torch.manual_seed(seed + 2)
    layers = CLIP_LAYERS + (1 if sd2 else 0)
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=a["vocab"], hidden_size=HID, intermediate_size=4 * HID,
        num_attention_heads=HID // 64, num_hidden_layers=layers, max_position_embeddings=77,
        hidden_act="gelu" if sd2 else "quick_gelu", layer_norm_eps=1e-5, projection_dim=HID,
        bos_token_id=min(49406, a["vocab"] - 2), eos_token_id=min(49407, a["vocab"] - 1),
        pad_token_id=0 if sd2 else min(49407, a["vocab"] - 1),
    ))
    return load_synth(unet, "unet."), load_synth(vae, "vae."), load_synth(te, "text_encoder.")


def open_clip_ldm(te_sd, layers):
    """transformers CLIP (canonical text_model.* keys) -> open_clip LDM keys (SD2 files)."""
    sd = canonical_clip_keys(te_sd)
    out = {}
    p = "cond_stage_model.model."
    out[p + "token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out[p + "positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    out[p + "ln_final.weight"] = sd["text_model.final_layer_norm.weight"]
    out[p + "ln_final.bias"] = sd["text_model.final_layer_norm.bias"]
    out[p + "text_projection"] = torch.eye(HID)
    out[p + "logit_scale"] = torch.tensor(4.6052)
    for i in range(layers):
        s = f"text_model.encoder.layers.{i}."
        d = f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[d + f"attn.in_proj_{kind}"] = torch.cat(
                [sd[s + f"self_attn.{q}_proj.{kind}"] for q in ("q", "k", "v")])
            out[d + f"attn.out_proj.{kind}"] = sd[s + f"self_attn.out_proj.{kind}"]
            out[d + f"ln_1.{kind}"] = sd[s + f"layer_norm1.{kind}"]
            out[d + f"ln_2.{kind}"] = sd[s + f"layer_norm2.{kind}"]
            out[d + f"mlp.c_fc.{kind}"] = sd[s + f"mlp.fc1.{kind}"]
            out[d + f"mlp.c_proj.{kind}"] = sd[s + f"mlp.fc2.{kind}"]
    return out


def half(sd):
    return {k: v.detach().half().contiguous() for k, v in sd.items()}


def check_ldm(ldm, unet, vae, te, sd2):
    """diffusers' own single-file converters must give back our diffusers tensors."""
    def same(name, a, b):
        assert set(a) == set(b), (name, sorted(set(a) ^ set(b))[:6])
        worst = max(float((a[k].float() - b[k].float().reshape(a[k].shape)).abs().max()) for k in a)
        assert worst == 0, (name, worst)
    u = sfu.convert_ldm_unet_checkpoint(dict(ldm), unet.config)
    same("unet", {k: v for k, v in unet.state_dict().items()}, u)
    v = sfu.convert_ldm_vae_checkpoint(dict(ldm), vae.config)
    same("vae", vae.state_dict(), v)
    if not sd2:
        t = sfu.convert_ldm_clip_checkpoint(dict(ldm))
        same("text_encoder", canonical_clip_keys(te.state_dict()), canonical_clip_keys(t))


def reference(arch, unet, vae, te, sd2):
    g = torch.Generator().manual_seed(7)
    vocab = ARCHS[arch]["vocab"]
    pad = 0 if sd2 else min(49407, vocab - 1)
    ids = torch.full((2, 77), pad, dtype=torch.int64)
    for row, n in ((0, 9), (1, 30)):
        body = torch.randint(1, min(vocab, 49406), (n,), generator=g)
        ids[row, 0] = 49406 if vocab > 49406 else vocab - 2
        ids[row, 1:n + 1] = body
        ids[row, n + 1] = 49407 if vocab > 49407 else vocab - 1
    r = {"clip_input_ids": ids}
    with torch.no_grad():
        o = te(ids, output_hidden_states=True)
        if sd2:   # canonical SD2 encoder = all but the last open_clip layer
            hs = o.hidden_states[:-1]
            r["clip_last"] = te.final_layer_norm(hs[-1])
            r["clip_penultimate"] = te.final_layer_norm(hs[-2])
        else:
            r["clip_last"] = o.last_hidden_state
            r["clip_penultimate"] = te.final_layer_norm(o.hidden_states[-2])
        in_ch = ARCHS[arch]["in_ch"]
        # latents of 16x16 and more: at 8x8 the bottom level is 1x1 and its GroupNorms see two
        # values per group, which makes any f32 implementation (torch's included) ~1e-5 off
        cases = [(torch.tensor([999.0, 500.5]), 77, 16, 16), (torch.tensor([1.25, 250.0]), 5, 16, 16),
                 (torch.tensor([42.0, 42.0]), 11, 24, 16)]
        for i, (t, n, h, w) in enumerate(cases):
            x = torch.randn((2, in_ch, h, w), generator=g)
            ctx = torch.randn((2, n, HID), generator=g)
            r[f"unet{i}_x"], r[f"unet{i}_t"], r[f"unet{i}_context"] = x, t, ctx
            r[f"unet{i}_out"] = unet(x, t, encoder_hidden_states=ctx).sample
        x = torch.ones((1, in_ch, 8, 8)) * 0.5
        out = unet(x, torch.tensor([999.0]), encoder_hidden_states=torch.ones((1, 2, HID)) * 0.5).sample
        r["a1111_v_test"] = (out - x[:, :4]).mean().reshape(1)
        img = torch.rand((1, 3, 64, 64), generator=g) * 2 - 1
        h = vae.encoder(img)
        moments = vae.quant_conv(h)
        mean, logvar = moments.chunk(2, dim=1)
        r["vae_image"], r["vae_mean"], r["vae_logvar"] = img, mean, logvar
        z = torch.randn((1, 4, 8, 8), generator=g)
        r["vae_z"] = z
        r["vae_decoded"] = vae.decode(z).sample
    return {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in r.items()}


def manifest_entries(tensors, names_by_checksum):
    """[key, shape, sources, checksum] for each tensor, sources found by content: a canonical
    synth tensor, or several concatenated along axis 0 (fused q/k/v)."""
    out = []
    for key, t in tensors.items():
        a = t.detach().half().numpy()
        src = names_by_checksum.get(checksum(a.reshape(-1)))
        if src is not None:
            sources = [src]
        else:
            parts = np.split(a, 3, axis=0)
            sources = [names_by_checksum.get(checksum(p.reshape(-1))) for p in parts]
            assert all(sources), f"cannot trace {key}"
        out.append([key, list(a.shape), sources, checksum(a)])
    return out


def write(out, arch, seed, files):
    sd2 = ARCHS[arch]["family"] == "sd2"
    unet, vae, te = build(arch, seed)
    base = os.path.join(out, arch)
    d = os.path.join(base, "diffusers")
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    unet.save_config(os.path.join(d, "unet"))
    vae.save_config(os.path.join(d, "vae"))
    te_sd = canonical_clip_keys(te.state_dict())
    if sd2:  # diffusers ships SD2's text encoder without its unused last layer
        last = f"text_model.encoder.layers.{CLIP_LAYERS}."
        te_sd = {k: v for k, v in te_sd.items() if not k.startswith(last)}
    cfg = te.config.to_dict()
    cfg["num_hidden_layers"] = CLIP_LAYERS
    with open(os.path.join(d, "text_encoder/config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    pred = "v_prediction" if arch == "sd2-v" else "epsilon"
    with open(os.path.join(d, "scheduler/scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                   "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                   "prediction_type": pred, "steps_offset": 1, "timestep_spacing": "leading"}, f, indent=1)
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"]}, f)
    ldm = {}
    ldm.update(unet_to_ldm(unet.state_dict()))
    ldm.update(vae_to_ldm(vae.state_dict()))
    if sd2:
        ldm.update(open_clip_ldm(te.state_dict(), CLIP_LAYERS + 1))
    else:
        ldm.update({"cond_stage_model.transformer." + k: v for k, v in canonical_clip_keys(te.state_dict()).items()})
    for k in [k for k in ldm if k.startswith("cond_stage_model.model.") and k.split(".")[-1] in ("text_projection", "logit_scale")]:
        ldm[k] = torch.from_numpy(synth("extra." + k, list(ldm[k].shape)).astype(np.float32))
    # an unused extra, as real files have
    ldm["alphas_cumprod"] = torch.from_numpy(synth("extra.alphas_cumprod", [1000]).astype(np.float32))
    check_ldm(ldm, unet, vae, te, sd2)
    meta = {"modelspec.prediction_type": "v"} if arch == "sd2-v" else {}

    layouts = {
        f"tiny_{arch}.safetensors": (ldm, meta),
        "diffusers/unet/diffusion_pytorch_model.safetensors": (unet.state_dict(), {}),
        "diffusers/vae/diffusion_pytorch_model.safetensors": (vae.state_dict(), {}),
        "diffusers/text_encoder/model.safetensors": (te_sd, {"format": "pt"}),
    }
    names = {}
    for prefix, m in (("unet.", unet), ("vae.", vae), ("text_encoder.", te)):
        for k, v in m.state_dict().items():
            if not k.endswith("position_ids"):
                names[checksum(v.detach().half().numpy().reshape(-1))] = canonical(prefix, k)
    for k in ldm:
        if k == "alphas_cumprod" or k.split(".")[-1] in ("text_projection", "logit_scale"):
            names[checksum(ldm[k].half().numpy().reshape(-1))] = "extra." + k
    manifest = {"generator": "tools/reference/make_tiny_models.py", "dtype": "F16", "files": {}}
    for fname, (sd, md) in layouts.items():
        sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
        manifest["files"][fname] = {"metadata": md, "tensors": manifest_entries(sd, names)}
        if files:
            save_file(half(sd), os.path.join(base, fname), metadata=md or None)
    with open(os.path.join(base, "manifest.json"), "w") as f:
        json.dump(manifest, f, separators=(",", ":"))
    save_file(reference(arch, unet, vae, te, sd2), os.path.join(base, "reference.safetensors"))
    print(arch, "unet", sum(p.numel() for p in unet.parameters()), "vae",
          sum(p.numel() for p in vae.parameters()), "te", sum(p.numel() for p in te.parameters()))


def main():
    out = sys.argv[1]
    files = "--files" in sys.argv
    for i, arch in enumerate(ARCHS):
        write(out, arch, 100 * (i + 1), files)


if __name__ == "__main__":
    main()
