#!/usr/bin/env python3
"""Tiny random SDXL base, SDXL refiner and SDXL inpainting models with SDXL's structural
rules, in the diffusers folder layout and the A1111/SGM single-file layout (f16 storage), plus
reference outputs computed in f32 by diffusers/transformers for the parity tests in
crates/sumi-models (tests/sdxl_parity.rs) and the detection tests.

SDXL's rules, at tiny sizes (full size in brackets):
  U-Net: 3 levels of 32/64/128 channels [320/640/1280], no attention at level 0, transformer
  depth 1 and 2 at levels 1 and 2 [2, 10] and the last level's depth in the middle block,
  64-channel heads, linear proj_in/out, context = CLIP-L width + bigG width = 64 + 128 [2048],
  ADM input ("text_time"): bigG pooled projection (128 [1280]) + 6 Fourier embeddings of
  addition_time_embed_dim 32 [256] = 320 [2816].
  Refiner: 4 levels of 32/64/64/64 [384/768/1536/1536], attention at levels 1 and 2 only,
  depth 2 [4] everywhere, context = bigG width 128 [1280], ADM = 128 + 5 * 32 = 288 [2560]
  (original size, crop, aesthetic score).
  Inpainting: the base with 9 input channels.
  CLIP-L: 64 wide, 3 layers [768, 12], quick_gelu; A1111 reads hidden_states[layers - 1]
  (layer "hidden", layer_idx 11: the penultimate, without the final layer norm).
  OpenCLIP bigG: 128 wide, 3 layers [1280, 32], gelu, projection 128 [1280]; the context is
  the penultimate layer without the final layer norm, the pooled vector the last layer through
  ln_final at the end token (argmax of the ids) times text_projection.
  VAE: the SD VAE with scaling_factor 0.13025.

The single-file key layout (written here from the SGM module structure, independently of any
converter, then checked against diffusers' own converters): `model.diffusion_model.*` with
`input_blocks.{3 * level + j + 1}` (resnet .0, attention .1), `input_blocks.{3 * (level + 1)}.0.op`
downsamplers, `output_blocks.{3 * up + j}` (resnet .0, attention .1 when the level has one,
upsampler after them), `middle_block.0/1/2`, `time_embed.0/2`, `label_emb.0.0/0.2`;
`conditioner.embedders.0.transformer.text_model.*` (CLIP-L, transformers layout),
`conditioner.embedders.1.model.*` (bigG, open_clip layout: fused `attn.in_proj_*`,
`text_projection` stored [width, projection], the transpose of transformers'); the refiner has
only bigG, as `conditioner.embedders.0.model.*`; `first_stage_model.*` (VAE).

Weights come from synth_weights.synth(canonical name) as in make_tiny_models.py, so what is
committed is a manifest per model (with the source `T:<name>` for a tensor stored transposed)
plus configs and reference outputs.  Canonical names: `unet.`, `vae.`, `text_encoder.` (CLIP-L)
and `text_encoder_2.` (bigG, with `text_projection.weight`).

Usage: make_sdxl_fixtures.py OUT_DIR [--files]   (OUT_DIR is fixtures/tiny; writes
       OUT_DIR/sdxl, OUT_DIR/sdxl-refiner, OUT_DIR/sdxl-inpaint)
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
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from ldm_keys import vae_to_ldm
from synth_weights import checksum, synth

torch.set_num_threads(2)
L_HID, G_HID, LAYERS, TIME_DIM = 64, 128, 3, 32
ARCHS = {
    "sdxl": dict(refiner=False, in_ch=4),
    "sdxl-inpaint": dict(refiner=False, in_ch=9),
    "sdxl-refiner": dict(refiner=True, in_ch=4),
}


def load_synth(module, prefix, strip_text_model):
    with torch.no_grad():
        for k, p in module.state_dict().items():
            if k.endswith("position_ids"):
                continue
            name = k[len("text_model."):] if strip_text_model and k.startswith("text_model.") else k
            p.copy_(torch.from_numpy(synth(prefix + name, list(p.shape)).astype(np.float32)))
    return module.eval()


def unet_for(arch):
    a = ARCHS[arch]
    if a["refiner"]:
        chans = (32, 64, 64, 64)
        return UNet2DConditionModel(
            sample_size=16, in_channels=a["in_ch"], out_channels=4, block_out_channels=chans,
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=2, attention_head_dim=[max(1, c // 64) for c in chans],
            cross_attention_dim=G_HID, use_linear_projection=True, norm_num_groups=32,
            addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
            projection_class_embeddings_input_dim=G_HID + 5 * TIME_DIM,
        )
    chans = (32, 64, 128)
    return UNet2DConditionModel(
        sample_size=16, in_channels=a["in_ch"], out_channels=4, block_out_channels=chans,
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=[1, 1, 2], attention_head_dim=[max(1, c // 64) for c in chans],
        cross_attention_dim=L_HID + G_HID, use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=G_HID + 6 * TIME_DIM,
    )


def clip_config(hid, gelu, pad):
    return CLIPTextConfig(
        vocab_size=49408, hidden_size=hid, intermediate_size=4 * hid, num_attention_heads=hid // 64,
        num_hidden_layers=LAYERS, max_position_embeddings=77, hidden_act="gelu" if gelu else "quick_gelu",
        layer_norm_eps=1e-5, projection_dim=hid, bos_token_id=49406, eos_token_id=49407, pad_token_id=pad,
    )


def build(arch):
    unet = load_synth(unet_for(arch), "unet.", False)
    vae = load_synth(AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=64,
        scaling_factor=0.13025,
    ), "vae.", False)
    te1 = None if ARCHS[arch]["refiner"] else load_synth(
        CLIPTextModel(clip_config(L_HID, False, 49407)), "text_encoder.", True)
    te2 = load_synth(CLIPTextModelWithProjection(clip_config(G_HID, True, 0)), "text_encoder_2.", True)
    return unet, vae, te1, te2


# ---- diffusers -> SGM single-file keys ----

RESNET = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
          ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."),
          ("conv_shortcut.", "skip_connection.")]


def unet_prefixes(unet):
    """(diffusers prefix, SGM prefix, is_resnet) for every block of this U-Net."""
    cfg = unet.config
    n = len(cfg.block_out_channels)
    attn = [t.startswith("CrossAttn") for t in cfg.down_block_types]
    lpb = cfg.layers_per_block
    out = [("time_embedding.linear_1.", "time_embed.0.", False),
           ("time_embedding.linear_2.", "time_embed.2.", False),
           ("add_embedding.linear_1.", "label_emb.0.0.", False),
           ("add_embedding.linear_2.", "label_emb.0.2.", False),
           ("conv_in.", "input_blocks.0.0.", False), ("conv_norm_out.", "out.0.", False),
           ("conv_out.", "out.2.", False),
           ("mid_block.resnets.0.", "middle_block.0.", True),
           ("mid_block.attentions.0.", "middle_block.1.", False),
           ("mid_block.resnets.1.", "middle_block.2.", True)]
    for lvl in range(n):
        for j in range(lpb):
            ib = (lpb + 1) * lvl + j + 1
            out.append((f"down_blocks.{lvl}.resnets.{j}.", f"input_blocks.{ib}.0.", True))
            if attn[lvl]:
                out.append((f"down_blocks.{lvl}.attentions.{j}.", f"input_blocks.{ib}.1.", False))
        if lvl + 1 < n:
            out.append((f"down_blocks.{lvl}.downsamplers.0.conv.", f"input_blocks.{(lpb + 1) * (lvl + 1)}.0.op.", False))
    for up in range(n):
        lvl = n - 1 - up
        for j in range(lpb + 1):
            ob = (lpb + 1) * up + j
            out.append((f"up_blocks.{up}.resnets.{j}.", f"output_blocks.{ob}.0.", True))
            if attn[lvl]:
                out.append((f"up_blocks.{up}.attentions.{j}.", f"output_blocks.{ob}.1.", False))
        if up + 1 < n:
            ob = (lpb + 1) * up + lpb
            out.append((f"up_blocks.{up}.upsamplers.0.", f"output_blocks.{ob}.{2 if attn[lvl] else 1}.", False))
    return out


def unet_to_sgm(unet):
    table = unet_prefixes(unet)
    out = {}
    for k, t in unet.state_dict().items():
        hits = [(d, s, r) for d, s, r in table if k.startswith(d)]
        assert len(hits) == 1, (k, hits)
        d, s, r = hits[0]
        tail = k[len(d):]
        if r:
            tail = next((b + tail[len(a):] for a, b in RESNET if tail.startswith(a)), tail)
        out["model.diffusion_model." + s + tail] = t
    return out


def open_clip_sgm(te2, prefix):
    """transformers CLIPTextModelWithProjection -> open_clip keys under `prefix`."""
    sd = te2.state_dict()
    g = lambda k: sd["text_model." + k]
    out = {prefix + "token_embedding.weight": g("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": g("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": g("final_layer_norm.weight"),
           prefix + "ln_final.bias": g("final_layer_norm.bias"),
           prefix + "text_projection": sd["text_projection.weight"].t().contiguous(),
           prefix + "logit_scale": torch.tensor(4.6052)}
    for i in range(LAYERS):
        s, d = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[d + f"attn.in_proj_{kind}"] = torch.cat([g(s + f"self_attn.{q}_proj.{kind}") for q in "qkv"])
            for a, b in (("attn.out_proj.", "self_attn.out_proj."), ("ln_1.", "layer_norm1."),
                         ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")):
                out[d + a + kind] = g(s + b + kind)
    return out


def sgm_file(arch, unet, vae, te1, te2):
    sd = {}
    sd.update(unet_to_sgm(unet))
    sd.update(vae_to_ldm(vae.state_dict()))
    if te1 is None:
        sd.update(open_clip_sgm(te2, "conditioner.embedders.0.model."))
    else:
        sd.update({"conditioner.embedders.0.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
                   for k, v in te1.state_dict().items() if not k.endswith("position_ids")})
        sd.update(open_clip_sgm(te2, "conditioner.embedders.1.model."))
    for k in [k for k in sd if k.endswith("logit_scale")]:
        sd[k] = torch.from_numpy(synth("extra." + k, []).astype(np.float32)).reshape(())
    sd["alphas_cumprod"] = torch.from_numpy(synth("extra.alphas_cumprod", [1000]).astype(np.float32))
    return sd


def check_sgm(sd, unet, vae, te2, refiner):
    """diffusers' own single-file converters must give back our diffusers tensors."""
    def same(name, a, b):
        assert set(a) == set(b), (name, sorted(set(a) ^ set(b))[:6])
        worst = max(float((a[k].float() - b[k].float().reshape(a[k].shape)).abs().max()) for k in a)
        assert worst == 0, (name, worst)
    same("unet", unet.state_dict(), sfu.convert_ldm_unet_checkpoint(dict(sd), unet.config))
    same("vae", vae.state_dict(), sfu.convert_ldm_vae_checkpoint(dict(sd), vae.config))
    prefix = "conditioner.embedders.0.model." if refiner else "conditioner.embedders.1.model."
    te = CLIPTextModelWithProjection(te2.config)
    conv = sfu.convert_open_clip_checkpoint(te, dict(sd), prefix=prefix)
    same("text_encoder_2", {k: v for k, v in te2.state_dict().items() if not k.endswith("position_ids")},
         {k: v for k, v in conv.items() if not k.endswith("position_ids")})


def reference(arch, unet, vae, te1, te2):
    refiner = ARCHS[arch]["refiner"]
    g = torch.Generator().manual_seed(11)
    r = {}
    with torch.no_grad():
        ids = torch.zeros((2, 77), dtype=torch.int64)
        ids_l = torch.full((2, 77), 49407, dtype=torch.int64)
        for row, n in ((0, 9), (1, 30)):
            body = torch.randint(1, 49406, (n,), generator=g)
            for t in (ids, ids_l):
                t[row, 0] = 49406
                t[row, 1:n + 1] = body
                t[row, n + 1] = 49407
        if arch == "sdxl":  # the refiner's and the inpainting model's encoders are the same
            r["clip_g_input_ids"] = ids
            o = te2(ids, output_hidden_states=True)
            r["clip_g_penultimate"] = o.hidden_states[-2]
            r["clip_g_pooled"] = o.text_embeds
            r["clip_l_input_ids"] = ids_l
            o = te1(ids_l, output_hidden_states=True)
            r["clip_l_hidden"] = o.hidden_states[LAYERS - 1]  # A1111: hidden_states[layer_idx 11]
        ctx_dim = unet.config.cross_attention_dim
        in_ch = ARCHS[arch]["in_ch"]
        n_ids = 5 if refiner else 6
        cases = [(torch.tensor([999.0, 500.5]), 77, 16, 16), (torch.tensor([1.25, 250.0]), 5, 24, 16)]
        for i, (t, n, h, w) in enumerate(cases):
            x = torch.randn((2, in_ch, h, w), generator=g)
            ctx = torch.randn((2, n, ctx_dim), generator=g)
            pooled = torch.randn((2, G_HID), generator=g)
            if refiner:  # original size, crop top/left, aesthetic score
                time_ids = torch.tensor([[h * 8.0, w * 8.0, 0.0, 0.0, 6.0], [1024.0, 768.0, 16.0, 8.0, 2.5]])
            else:        # original size, crop top/left, target size
                time_ids = torch.tensor([[h * 8.0, w * 8.0, 0.0, 0.0, h * 8.0, w * 8.0],
                                         [1024.0, 768.0, 16.0, 8.0, 832.0, 1216.0]])
            assert time_ids.shape[1] == n_ids
            time_embeds = unet.add_time_proj(time_ids.flatten()).reshape(2, -1)
            r[f"unet{i}_x"], r[f"unet{i}_t"], r[f"unet{i}_context"] = x, t, ctx
            r[f"unet{i}_pooled"], r[f"unet{i}_time_ids"] = pooled, time_ids
            r[f"unet{i}_y"] = torch.cat([pooled, time_embeds], dim=-1)
            r[f"unet{i}_out"] = unet(x, t, encoder_hidden_states=ctx,
                                     added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        z = torch.randn((1, 4, 8, 8), generator=g)
        r["vae_z"] = z
        r["vae_decoded"] = vae.decode(z).sample
    return {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in r.items()}


def manifest_entries(tensors, names):
    """[key, shape, sources, checksum]; a source is a canonical synth name, `T:<name>` for a
    2-D tensor stored transposed, or three names concatenated along axis 0 (fused q/k/v)."""
    out = []
    for key, t in tensors.items():
        a = t.detach().half().numpy()
        src = names.get(checksum(a.reshape(-1)))
        if src is not None:
            sources = [src]
        elif a.ndim == 2 and names.get(checksum(np.ascontiguousarray(a.T).reshape(-1))) is not None:
            sources = ["T:" + names[checksum(np.ascontiguousarray(a.T).reshape(-1))]]
        else:
            parts = np.split(a, 3, axis=0)
            sources = [names.get(checksum(np.ascontiguousarray(p).reshape(-1))) for p in parts]
            assert all(sources), f"cannot trace {key}"
        out.append([key, list(a.shape), sources, checksum(a)])
    return out


def half(sd):
    return {k: v.detach().half().contiguous() for k, v in sd.items()}


def write(out, arch, files):
    refiner = ARCHS[arch]["refiner"]
    unet, vae, te1, te2 = build(arch)
    base = os.path.join(out, arch)
    d = os.path.join(base, "diffusers")
    subs = ["unet", "vae", "text_encoder_2", "scheduler"] + ([] if refiner else ["text_encoder"])
    for sub in subs:
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    unet.save_config(os.path.join(d, "unet"))
    vae.save_config(os.path.join(d, "vae"))
    te2.config.to_json_file(os.path.join(d, "text_encoder_2/config.json"))
    if te1 is not None:
        te1.config.to_json_file(os.path.join(d, "text_encoder/config.json"))
    with open(os.path.join(d, "scheduler/scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                   "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                   "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading"}, f, indent=1)
    pipe = "StableDiffusionXLImg2ImgPipeline" if refiner else (
        "StableDiffusionXLInpaintPipeline" if arch == "sdxl-inpaint" else "StableDiffusionXLPipeline")
    index = {"_class_name": pipe, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": [None, None] if refiner else ["transformers", "CLIPTextModel"],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
             "requires_aesthetics_score": refiner, "force_zeros_for_empty_prompt": not refiner}
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump(index, f, indent=1)

    sgm = sgm_file(arch, unet, vae, te1, te2)
    check_sgm(sgm, unet, vae, te2, refiner)
    te_sd = lambda m: {(k if k.startswith("text_model.") or k.startswith("text_projection") else "text_model." + k): v
                       for k, v in m.state_dict().items() if not k.endswith("position_ids")}
    layouts = {
        f"tiny_{arch}.safetensors": sgm,
        "diffusers/unet/diffusion_pytorch_model.safetensors": unet.state_dict(),
        "diffusers/vae/diffusion_pytorch_model.safetensors": vae.state_dict(),
        "diffusers/text_encoder_2/model.safetensors": te_sd(te2),
    }
    if te1 is not None:
        layouts["diffusers/text_encoder/model.safetensors"] = te_sd(te1)
    names = {}
    mods = [("unet.", unet), ("vae.", vae), ("text_encoder_2.", te2)] + ([] if te1 is None else [("text_encoder.", te1)])
    for prefix, m in mods:
        for k, v in m.state_dict().items():
            if not k.endswith("position_ids"):
                name = k[len("text_model."):] if k.startswith("text_model.") else k
                names[checksum(v.detach().half().numpy().reshape(-1))] = prefix + name
    for k in sgm:
        if k == "alphas_cumprod" or k.endswith("logit_scale"):
            names[checksum(sgm[k].half().numpy().reshape(-1))] = "extra." + k
    manifest = {"generator": "tools/reference/make_sdxl_fixtures.py", "dtype": "F16", "files": {}}
    for fname, sd in layouts.items():
        sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
        md = {"format": "pt"} if fname.endswith("model.safetensors") and "text_encoder" in fname else {}
        manifest["files"][fname] = {"metadata": md, "tensors": manifest_entries(sd, names)}
        if files:
            save_file(half(sd), os.path.join(base, fname), metadata=md or None)
    with open(os.path.join(base, "manifest.json"), "w") as f:
        json.dump(manifest, f, separators=(",", ":"))
    save_file(reference(arch, unet, vae, te1, te2), os.path.join(base, "reference.safetensors"))
    print(arch, "unet", sum(p.numel() for p in unet.parameters()), "vae",
          sum(p.numel() for p in vae.parameters()), "te2", sum(p.numel() for p in te2.parameters()))


def main():
    out = sys.argv[1]
    files = "--files" in sys.argv
    for arch in ARCHS:
        write(out, arch, files)


if __name__ == "__main__":
    main()
