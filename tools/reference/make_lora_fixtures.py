#!/usr/bin/env python3
"""LoRA / LyCORIS fixtures for the tiny SD1 and SD2-v models (fixtures/lora/):

1. network files in the layouts real files use (kohya `lora_unet_…`/`lora_te_…` names with
   diffusers- and compvis-style module names; LyCORIS files written by the lycoris-lora package's
   own network classes and save function; a PEFT-style lora_A/lora_B file; an SDXL-keyed file; a
   bundled embedding; a torch.save .pt; an f16 file; a subfolder; an ss_output_name alias);
2. cases.json + expected.safetensors: per merge case, the tensors A1111 v1.10.1 would hold after
   network_apply_weights (lora_ref.py, the restatement), keyed "<case>/<LDM key>", f32, from the
   tiny model's weights (f16 storage widened, as make_tiny_models builds them);
3. e2e.safetensors: end-to-end renders through make_generate_fixtures' A1111-restated sampling
   with the merged weights loaded, prompts as typed (the <lora:…> tags stripped from the positive
   prompt only, as A1111 does).

Random values are scaled per module so that |Δ| / |W| lies in 2e-2..8e-2.  LyCORIS files are
checked against the lycoris package's own get_diff_weight (printed; the run stops on a mismatch).

Usage: make_lora_fixtures.py BPE_FILE [OUT_DIR]   (BPE: bpe_simple_vocab_16e6.txt.gz; OUT_DIR
       defaults to fixtures/lora next to this tools/ folder)
"""
import copy
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import lora_ref as R  # noqa: E402
from ldm_keys import canonical_clip_keys, unet_to_ldm  # noqa: E402
from make_tiny_models import CLIP_LAYERS, build, open_clip_ldm  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(2)
ROOT = os.path.dirname(os.path.dirname(HERE))
ARCH_SEED = {"sd1": 100, "sd1-inpaint": 200, "sd2-v": 400}  # make_tiny_models' seeds


class Ctx:
    """One tiny model: diffusers modules, its LDM state dict (f32) and A1111's layer mapping."""

    def __init__(self, arch):
        self.arch, self.sd2 = arch, arch.startswith("sd2")
        self.unet, self.vae, self.te = build(arch, ARCH_SEED[arch])
        ldm = unet_to_ldm(self.unet.state_dict())
        if self.sd2:
            ldm.update(open_clip_ldm(self.te.state_dict(), CLIP_LAYERS + 1))
        else:
            ldm.update({"cond_stage_model.transformer." + k: v
                        for k, v in canonical_clip_keys(self.te.state_dict()).items()})
        self.ldm = {k: v.detach().float().contiguous() for k, v in ldm.items()}
        self.layers = R.layer_mapping(self.ldm, self.sd2)
        man = json.load(open(os.path.join(ROOT, "fixtures/tiny", arch, "manifest.json")))
        self.canonical = {k: src for k, _, src, _ in man["files"][f"tiny_{arch}.safetensors"]["tensors"]}
        last = f"model_transformer_resblocks_{CLIP_LAYERS}"  # SD2: penultimate layer; the last never runs
        self.ran = (lambda lay: not lay.name.startswith(last)) if self.sd2 else (lambda lay: True)

    def orig_for(self, module):
        lay = module.layer
        if lay.kind == "mha":
            i = "qkv".index(module.sd_key[-len("q_proj")])
            return self.ldm[lay.weight_key].chunk(3, 0)[i]
        return self.ldm[lay.weight_key]


# ---------------------------------------------------------------------------------------------
# random networks

FACTORS = {"lora": ["lora_up.weight", "lora_B.weight"], "hada": ["hada_w1_a"], "ia3": ["weight"],
           "lokr": ["lokr_w1", "lokr_w1_a"], "full": ["diff"], "norm": ["w_norm"],
           "glora": ["a2.weight", "b2.weight"], "oft": ["oft_blocks"]}


def calibrate(sd, ctx, gen, lo=0.02, hi=0.08):
    """Scale one factor per module so that |Δ|/|W| (multiplier 1) is uniform in [lo, hi]."""
    net = R.Net("calibrate")
    R.load_network(net, sd, ctx.layers, ctx.ldm, ctx.sd2)
    for sd_key, mod in net.modules.items():
        target = lo + (hi - lo) * float(torch.rand((), generator=gen))
        base = mod.base
        for _ in range(8):
            one = R.Net("one")
            part = {k.partition(".")[2]: v for k, v in sd.items() if k.partition(".")[0] == base}
            m = R.Module(one, sd_key, part, mod.layer, ctx.ldm)
            orig = ctx.orig_for(m)
            up, _ = m.calc_updown(orig)
            r = float(up.norm() / orig.norm())
            if abs(r / target - 1) < 1e-3:
                break
            s = target / r
            for f in FACTORS[m.kind]:
                k = base + "." + f
                if k in sd:
                    if m.kind == "oft":  # Cayley transform: scale the skew part
                        sd[k] = sd[k] * s
                    else:
                        sd[k] = sd[k] * s
    return sd


def randn(gen, *shape, std=1.0):
    return torch.randn(shape, generator=gen) * std


def lora_parts(gen, wshape, rank, alpha, tucker=False):
    """kohya LoRA / LoCon tensors for a weight of shape wshape."""
    out_c, in_c = wshape[0], wshape[1]
    p = {}
    if len(wshape) == 4:
        kh, kw = wshape[2], wshape[3]
        if tucker and kh > 1:
            p["lora_down.weight"] = randn(gen, rank, in_c, 1, 1)
            p["lora_mid.weight"] = randn(gen, rank, rank, kh, kw)
        else:
            p["lora_down.weight"] = randn(gen, rank, in_c, kh, kw)
        p["lora_up.weight"] = randn(gen, out_c, rank, 1, 1)
    else:
        p["lora_down.weight"] = randn(gen, rank, in_c)
        p["lora_up.weight"] = randn(gen, out_c, rank)
    p["alpha"] = torch.tensor(float(alpha))
    return p


def dshape(model, name):
    """weight shape of a diffusers module (unet or text encoder, canonical 'text_model.' names)."""
    if name.startswith("text_model."):
        return tuple(model.get_submodule(name[len("text_model."):]).weight.shape)
    return tuple(model.get_submodule(name).weight.shape)


def kohya_file(ctx, gen, targets, rank, alpha, tucker=False, part_names=None):
    """kohya-named LoRA over diffusers module names (unet: 'down_blocks…', te: 'text_model…')."""
    sd = {}
    for name in targets:
        te = name.startswith("text_model.")
        base = ("lora_te_" if te else "lora_unet_") + name.replace(".", "_")
        shape = dshape(ctx.te if te else ctx.unet, name)
        for k, v in lora_parts(gen, shape, rank, alpha, tucker).items():
            sd[f"{base}.{(part_names or {}).get(k, k)}"] = v
    return sd


# ---------------------------------------------------------------------------------------------
# LyCORIS files written by the lycoris package

class TextModelWrap(torch.nn.Module):
    """transformers >= 5.6 names CLIPTextModel's modules without 'text_model.'; kohya/LyCORIS
    files name them with it (lora_te_text_model_encoder_…), as real files do."""

    def __init__(self, te):
        super().__init__()
        self.text_model = te


def lycoris_file(ctx, gen, path, algo, unet_names, te_names, dim=4, alpha=2.0, dtype=torch.float32,
                 metadata=None, post=None, raw_std=None, **kw):
    """Create a LyCORIS network (lycoris.kohya.create_network) over copies of the tiny model,
    randomise and calibrate its tensors, save it with its own save_weights."""
    import toml
    from lycoris.kohya import create_network
    te, unet = TextModelWrap(copy.deepcopy(ctx.te)), copy.deepcopy(ctx.unet)
    with tempfile.TemporaryDirectory() as d:
        preset = os.path.join(d, "preset.toml")
        with open(preset, "w") as f:
            f.write(toml.dumps({"unet_target_module": [], "unet_target_name": unet_names,
                                "text_encoder_target_module": [], "text_encoder_target_name": te_names}))
        net = create_network(1.0, dim, alpha, None, te, unet, algo=algo, preset=preset,
                             conv_dim=dim, conv_alpha=alpha, **kw)
    net.apply_to(te, unet, True, True)
    live = net.state_dict(keep_vars=True)
    sd = {}
    for k, v in live.items():
        part = k.partition(".")[2]
        if part in ("alpha", "on_input", "dora_scale"):
            sd[k] = v.detach().clone()
        elif part in ("oft_blocks",):
            sd[k] = randn(gen, *v.shape, std=0.01)
        elif part in ("diff_b", "b_norm"):
            sd[k] = randn(gen, *v.shape, std=0.004)
        else:
            sd[k] = randn(gen, *v.shape, std=raw_std or 1.0)
    dora = {k: v for k, v in sd.items() if k.endswith(".dora_scale")}
    sd = {k: v for k, v in sd.items() if not k.endswith(".dora_scale")}
    if raw_std is None:
        calibrate(sd, ctx, gen)
    if dora:
        set_dora_scales(sd, dora, ctx, gen)
    if post:
        post(sd)
    mods = {lm.lora_name: lm for lm in net.unet_loras + net.text_encoder_loras}
    groups = {}
    for k, v in sd.items():
        base, part = k.split(".", 1)
        groups.setdefault(base, {})[part] = v
    with torch.no_grad():
        for base, parts in groups.items():  # the modules' own loaders (FullModule keeps W + diff)
            mods[base].load_state_dict(parts, strict=False)
    net.save_weights(path, dtype, metadata or {})
    saved = read_network_file(path)
    assert set(saved) == set(sd), sorted(set(saved) ^ set(sd))[:4]
    for k, v in sd.items():
        a, b = saved[k].float().reshape(v.shape), v.to(dtype).float()
        assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-7, k  # full: (W + diff) - W
    return verify_lycoris(ctx, net, te, unet, unet_names, te_names, read_network_file(path))


def verify_lycoris(ctx, net, te, unet, unet_names, te_names, sd):
    """The restatement's merged weight vs the lycoris package's own module: its forward (the
    function the network was trained as, on a random input) and its get_diff_weight."""
    import torch.nn.functional as F
    ref = R.Net("verify")
    R.load_network(ref, sd, ctx.layers, ctx.ldm, ctx.sd2)
    by_base = {m.base: m for m in ref.modules.values()}
    theirs = {lm.lora_name: lm for lm in net.unet_loras + net.text_encoder_loras}
    net.eval()
    g = torch.Generator().manual_seed(0)
    worst_fwd, worst_gdw, n, a1111_errors = 0.0, 0.0, 0, 0
    for name in unet_names + te_names:
        is_te = name in te_names
        base = ("lora_te_" if is_te else "lora_unet_") + name.replace(".", "_")
        m, mod = by_base[base], (te if is_te else unet).get_submodule(name)
        lay = m.layer
        w = ctx.orig_for(m)
        if lay.kind == "mha":
            b = ctx.ldm[lay.bias_key].chunk(3, 0)["qkv".index(m.sd_key[-len("q_proj")])]
        else:
            b = ctx.ldm[lay.bias_key] if lay.bias_key else None
        try:
            up, ex = m.calc_updown(w)
            torch.empty(w.shape).copy_(w + up)
        except RuntimeError:  # A1111 fails on this layer (counted in the case's errors)
            a1111_errors += 1
            continue
        w2, b2 = w + up, (b + ex if b is not None and ex is not None else (ex if ex is not None else b))
        with torch.no_grad():
            if isinstance(mod, torch.nn.Conv2d):
                x = torch.randn((1, w.shape[1], 8, 8), generator=g)
                ours = F.conv2d(x, w2, b2, stride=mod.stride, padding=mod.padding)
            elif isinstance(mod, torch.nn.GroupNorm):
                x = torch.randn((1, w.shape[0], 4, 4), generator=g)
                ours = F.group_norm(x, mod.num_groups, w2, b2, mod.eps)
            elif isinstance(mod, torch.nn.LayerNorm):
                x = torch.randn((3, w.shape[0]), generator=g)
                ours = F.layer_norm(x, mod.normalized_shape, w2, b2, mod.eps)
            else:
                x = torch.randn((3, w.shape[1]), generator=g)
                ours = F.linear(x, w2, b2)
            got = mod(x)
            worst_fwd = max(worst_fwd, float((got - ours).abs().max() / ours.abs().max()))
            try:
                d = theirs[base].get_diff_weight(multiplier=1.0, shape=w.shape)
                d = d[0] if isinstance(d, tuple) else d
                worst_gdw = max(worst_gdw, float((d.reshape(up.shape) - up).abs().max() / up.abs().max()))
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                worst_gdw = f"get_diff_weight failed: {type(e).__name__}"
        n += 1
    return dict(modules=n, a1111_errors=a1111_errors, forward_max_rel_diff=worst_fwd, get_diff_weight_max_rel_diff=worst_gdw)


def set_dora_scales(sd, dora, ctx, gen):
    """dora_scale = the per-input-column norm of W + Δ (LyCORIS' wd_on_out=False layout, the one
    A1111 v1.10.1 reads), perturbed by ~3% so DoRA changes the result."""
    net = R.Net("dora")
    R.load_network(net, sd, ctx.layers, ctx.ldm, ctx.sd2)
    for mod in net.modules.values():
        orig = ctx.orig_for(mod)
        up, _ = mod.calc_updown(orig)
        merged = orig + up
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        k = mod.base + ".dora_scale"
        want = dora[k].shape
        sd[k] = (norm * (1 + 0.03 * randn(gen, norm.numel()))).reshape(want)


# ---------------------------------------------------------------------------------------------
# the SD1 / SD2 network files

Q1 = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # shared by most files (order cases)
TEQ = "text_model.encoder.layers.0.self_attn.q_proj"
KOHYA_META = {"ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1",
              "ss_training_comment": "sumi fixture (random weights)"}


def save_st(sd, path, dtype=torch.float32, metadata=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, path, metadata=metadata)


def make_sd1_files(ctx, out):
    d = os.path.join(out, "sd1")
    os.makedirs(d, exist_ok=True)
    files = {}
    g = torch.Generator().manual_seed(1)

    # 1. kohya LoRA, diffusers-style names, f32, te + unet
    targets = [TEQ, "text_model.encoder.layers.0.self_attn.v_proj", "text_model.encoder.layers.1.self_attn.out_proj",
               "text_model.encoder.layers.2.mlp.fc2", Q1,
               "down_blocks.0.attentions.0.proj_in", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
               "down_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0",
               "mid_block.attentions.0.transformer_blocks.0.ff.net.2", "up_blocks.3.attentions.2.proj_out"]
    sd = calibrate(kohya_file(ctx, g, targets, 4, 2.0), ctx, g)
    save_st(sd, f"{d}/lora_kohya.safetensors", metadata={**KOHYA_META, "ss_network_dim": "4", "ss_network_alpha": "2.0"})
    files["sd1/lora_kohya.safetensors"] = dict(kind="kohya LoRA, diffusers-style module names, te+unet, rank 4 alpha 2")

    # 2. kohya LoRA with compvis-style unet names, f16, in a subfolder, with an ss_output_name alias
    sd = {}
    for ldm_mod in ["input_blocks.4.1.proj_in", "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
                    "middle_block.1.transformer_blocks.0.attn2.to_v", "output_blocks.5.1.transformer_blocks.0.attn2.to_out.0"]:
        shape = tuple(ctx.ldm[f"model.diffusion_model.{ldm_mod}.weight"].shape)
        for k, v in lora_parts(g, shape, 8, 8.0).items():
            sd["lora_unet_" + ldm_mod.replace(".", "_") + "." + k] = v
    sd.update(kohya_file(ctx, g, [TEQ, "text_model.encoder.layers.1.self_attn.k_proj"], 8, 8.0))
    sd = calibrate(sd, ctx, g)
    sd = {k: v.half().float() for k, v in sd.items()}  # what an f16 file holds
    save_st(sd, f"{d}/sub/lora_compvis.safetensors", torch.float16,
            metadata={**KOHYA_META, "ss_output_name": "compvis_alias", "ss_network_dim": "8", "ss_network_alpha": "8.0"})
    files["sd1/sub/lora_compvis.safetensors"] = dict(kind="kohya LoRA, compvis-style unet names (lora_unet_input_blocks_…), f16, subfolder, alias compvis_alias")

    # 3. torch.save .pt, kohya LoCon-style conv layers and A1111's special diffusers names
    targets = ["conv_in", "conv_out", "time_embedding.linear_1", "down_blocks.0.downsamplers.0.conv",
               "up_blocks.2.upsamplers.0.conv", "up_blocks.0.resnets.2.conv_shortcut",
               "down_blocks.1.resnets.0.time_emb_proj"]
    sd = calibrate(kohya_file(ctx, g, targets, 4, 1.0), ctx, g)
    torch.save({k: v.contiguous() for k, v in sd.items()}, f"{d}/lora_conv.pt")
    files["sd1/lora_conv.pt"] = dict(kind="kohya LoRA/LoCon in a torch.save .pt (plain dict): conv 3x3, conv_in/out, time embedding, down/upsamplers, resnet shortcut")

    # 4. LoRA with bundled embeddings (A1111's bundle_emb.<name>.string_to_param.* / emb_params)
    sd = calibrate(kohya_file(ctx, g, [Q1, TEQ], 2, 2.0), ctx, g)
    sd["bundle_emb.tinybundle.string_to_param.*"] = randn(g, 2, 64, std=0.02)
    sd["bundle_emb.tinyparams.emb_params"] = randn(g, 1, 64, std=0.02)
    save_st(sd, f"{d}/lora_bundle.safetensors", metadata={**KOHYA_META, "ss_network_dim": "2", "ss_network_alpha": "2.0"})
    files["sd1/lora_bundle.safetensors"] = dict(kind="kohya LoRA + bundled embeddings tinybundle (string_to_param, 2 vectors) and tinyparams (emb_params, 1 vector)")

    # 5. SDXL-keyed LoRA (te1/te2, SDXL compvis unet names)
    sd = {}
    for base, shape in [("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", (64, 64)),
                        ("lora_te2_text_model_encoder_layers_0_self_attn_k_proj", (64, 64)),
                        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", (64, 64)),
                        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", (64, 128)),
                        ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q", (64, 64)),
                        ("lora_unet_middle_block_1_proj_in", (64, 64))]:
        sd.update({f"{base}.{k}": v for k, v in lora_parts(g, shape, 4, 4.0).items()})
    sd = calibrate(sd, ctx, g)  # (the modules that match on SD1)
    save_st(sd, f"{d}/lora_sdxl.safetensors", metadata={"ss_network_module": "networks.lora",
                                                        "ss_base_model_version": "sdxl_base_v1-0"})
    files["sd1/lora_sdxl.safetensors"] = dict(kind="SDXL-keyed LoRA (lora_te1_/lora_te2_, SDXL compvis unet names; one attn2.to_k with SDXL's wider context)")

    # 6. PEFT-style lora_A / lora_B under kohya names (A1111 drops its alpha)
    sd = calibrate(kohya_file(ctx, g, [Q1, "down_blocks.2.attentions.0.transformer_blocks.0.attn2.to_q", TEQ], 4, 1.0,
                              part_names={"lora_up.weight": "lora_B.weight", "lora_down.weight": "lora_A.weight"}),
                   ctx, g)
    save_st(sd, f"{d}/lora_peft.safetensors")
    files["sd1/lora_peft.safetensors"] = dict(kind="lora_A/lora_B under kohya names, with alpha 1 (A1111 ignores it: scale 1)")

    # 7. kohya OFT (oft_unet_ + compvis names, oft_blocks + alpha constraint)
    sd = {}
    for ldm_mod, alpha in [("input_blocks.1.1.transformer_blocks.0.attn1.to_q", 1e-3),
                           ("output_blocks.4.1.proj_out", 0.0)]:
        shape = ctx.ldm[f"model.diffusion_model.{ldm_mod}.weight"].shape
        sd[f"oft_unet_{ldm_mod.replace('.', '_')}.oft_blocks"] = randn(g, 8, shape[0] // 8, shape[0] // 8, std=0.01)
        sd[f"oft_unet_{ldm_mod.replace('.', '_')}.alpha"] = torch.tensor(alpha)
    calibrate(sd, ctx, g)
    save_st(sd, f"{d}/oft_kohya.safetensors", metadata={"ss_network_module": "networks.oft", "ss_network_dim": "8"})
    files["sd1/oft_kohya.safetensors"] = dict(kind="kohya OFT: oft_unet_<compvis name>.oft_blocks (8 blocks) + alpha (constraint 1e-3, which clamps, and 0)")

    # 8. old LyCORIS OFT (oft_diag: R itself, block size 8)
    sd = {}
    for name in [Q1, TEQ]:
        te = name.startswith("text_model.")
        base = ("lora_te_" if te else "lora_unet_") + name.replace(".", "_")
        n = dshape(ctx.te if te else ctx.unet, name)[0]
        sd[base + ".oft_diag"] = torch.eye(8).repeat(n // 8, 1, 1) + randn(g, n // 8, 8, 8, std=0.01)
        sd[base + ".alpha"] = torch.tensor(8.0)
    save_st(sd, f"{d}/oft_diag_old.safetensors")
    files["sd1/oft_diag_old.safetensors"] = dict(kind="old LyCORIS OFT: oft_diag (blocks of R used as they are)")

    # LyCORIS files by the lycoris package
    unet_lin = [Q1, "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v"]
    conv1x1 = ["up_blocks.1.attentions.0.proj_in"]
    conv3 = ["down_blocks.1.resnets.1.conv2"]
    te_lin = [TEQ, "text_model.encoder.layers.2.self_attn.out_proj"]
    lyco = [
        ("locon", "lora", unet_lin + conv1x1 + conv3, te_lin, dict(use_tucker=True), "LyCORIS LoCon (algo lora) with Tucker lora_mid on the 3x3 conv"),
        ("loha", "loha", unet_lin + conv1x1 + conv3, te_lin + ["text_model.encoder.layers.2.mlp.fc1"], dict(use_tucker=True), "LyCORIS LoHa with Tucker hada_t1/hada_t2 on the 3x3 conv"),
        ("lokr", "lokr", unet_lin + conv1x1, te_lin, dict(decompose_both=True, factor=8, dim=2), "LyCORIS LoKr, factored (lokr_w1_a/b, lokr_w2_a/b where small enough)"),
        ("lokr_full", "lokr", unet_lin + conv3, te_lin, dict(full_matrix=True), "LyCORIS LoKr full_matrix (lokr_w1, lokr_w2)"),
        ("ia3", "ia3", unet_lin, te_lin, {}, "LyCORIS IA3 (weight, on_input) on linear layers"),
        ("full", "full", unet_lin + conv1x1, [TEQ], {}, "LyCORIS full (diff, diff_b)"),
        ("norm", "lora", [Q1, "down_blocks.0.attentions.0.norm", "down_blocks.0.attentions.0.transformer_blocks.0.norm1"],
         [TEQ, "text_model.encoder.layers.1.layer_norm2"], dict(train_norm=True), "LyCORIS LoRA + train_norm (w_norm, b_norm on GroupNorm/LayerNorm)"),
        ("glora_lycoris4", "glora", unet_lin, te_lin, dict(raw_std=0.05),
         "LyCORIS 4 GLoRA (a1 in x r, a2 r x in, b1 out x r, b2 r x in): A1111 v1.10.1's GLoRA formula fails on it (error per layer, nothing merged)"),
        ("diag_oft", "diag-oft", unet_lin + conv1x1, [TEQ], dict(dim=8, constraint=1e-3), "LyCORIS diag-oft (oft_blocks, alpha = constraint)"),
        ("boft", "boft", unet_lin + conv1x1, [TEQ], dict(dim=4), "LyCORIS BOFT (oft_blocks 4-D)"),
        ("dora", "lora", unet_lin + conv1x1, te_lin, dict(dora_wd=True, wd_on_output=False), "LyCORIS LoRA with DoRA (dora_scale, wd_on_output=False)"),
    ]
    for stem, algo, un, tn, kw, kind in lyco:
        kw = dict(kw)
        dim = kw.pop("dim", 4)
        check = lycoris_file(ctx, g, f"{d}/{stem}.safetensors", algo, un, tn, dim=dim, alpha=dim / 2, **kw)
        kw.pop("raw_std", None)
        files[f"sd1/{stem}.safetensors"] = dict(kind=kind, lycoris=dict(algo=algo, dim=dim, **kw, check=check))
        print(f"sd1/{stem}.safetensors: restatement vs lycoris {check}")

    # GLoRA in the layout A1111 v1.10.1 was written for (LyCORIS 2.x: a1 r x in, a2 out x r,
    # b1 r x in, b2 out x r; its formula needs square weights): square linear layers
    sd = {}
    for name in [Q1, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", TEQ]:
        te = name.startswith("text_model.")
        base = ("lora_te_" if te else "lora_unet_") + name.replace(".", "_")
        out_c, in_c = dshape(ctx.te if te else ctx.unet, name)
        r = 4
        sd.update({f"{base}.a1.weight": randn(g, r, in_c), f"{base}.a2.weight": randn(g, out_c, r),
                   f"{base}.b1.weight": randn(g, r, in_c), f"{base}.b2.weight": randn(g, out_c, r),
                   f"{base}.alpha": torch.tensor(4.0)})
    calibrate(sd, ctx, g)
    save_st(sd, f"{d}/glora.safetensors")
    files["sd1/glora.safetensors"] = dict(kind="GLoRA in LyCORIS 2.x layout (a1 r x in, a2 out x r, b1 r x in, b2 out x r), square linear layers; alpha unused (no dim)")
    return files


def make_sd2_files(ctx, out):
    d = os.path.join(out, "sd2-v")
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(2)
    files = {}
    qkvo = [f"text_model.encoder.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
    targets = qkvo + ["text_model.encoder.layers.2.mlp.fc1", "down_blocks.0.attentions.0.proj_in", Q1,
                      "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k"]
    sd = calibrate(kohya_file(ctx, g, targets, 4, 2.0), ctx, g)
    save_st(sd, f"{d}/lora_sd2.safetensors", metadata={"ss_network_module": "networks.lora", "ss_v2": "True",
                                                       "ss_network_dim": "4", "ss_network_alpha": "2.0"})
    files["sd2-v/lora_sd2.safetensors"] = dict(kind="kohya LoRA on SD2: te q/k/v/out of layers 0-1 (A1111: through the OpenCLIP MHA), mlp fc1, linear proj_in, unet attention")
    targets = [f"text_model.encoder.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")] + [
        "text_model.encoder.layers.1.self_attn.out_proj", "text_model.encoder.layers.1.mlp.fc2"]
    sd = calibrate(kohya_file(ctx, g, targets, 4, 4.0), ctx, g)
    save_st(sd, f"{d}/lora_sd2_partial.safetensors", metadata={"ss_v2": "True"})
    files["sd2-v/lora_sd2_partial.safetensors"] = dict(kind="SD2 LoRA with q/k/v but no out_proj (layer 0) and out_proj alone (layer 1): A1111 applies neither; mlp fc2 applies")
    check = lycoris_file(ctx, g, f"{d}/loha_sd2.safetensors", "loha",
                 ["down_blocks.1.attentions.0.proj_out", Q1],
                 [f"text_model.encoder.layers.2.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj")],
                 dim=4, alpha=2.0)
    files["sd2-v/loha_sd2.safetensors"] = dict(kind="LyCORIS LoHa on SD2: te layer 2 q/k/v/out (MHA path), unet linear proj_out and attention",
                                               lycoris=dict(algo="loha", dim=4, check=check))
    print(f"sd2-v/loha_sd2.safetensors: restatement vs lycoris {check}")
    return files


# ---------------------------------------------------------------------------------------------
# cases

def canonical_header(path):
    """Rewrite a safetensors header with sorted keys: safetensors writes `__metadata__` in hash
    order, which would make the files (and their sha256) differ from run to run."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header + raw[8 + n:])


def read_network_file(path):
    if path.endswith(".safetensors"):
        return load_file(path)
    return torch.load(path, map_location="cpu")


def file_info(path):
    info = {"format": "safetensors" if path.endswith(".safetensors") else "pt", "metadata": {}}
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            info["metadata"] = dict(sorted((f.metadata() or {}).items()))
            info["dtype"] = str(f.get_tensor(next(iter(f.keys()))).dtype).replace("torch.", "")
    else:
        info["dtype"] = "float32"
    return info


def resolve(out, files, name):
    """A1111's name lookup: file stem, or ss_output_name alias."""
    for rel, info in files.items():
        stem = os.path.splitext(os.path.basename(rel))[0]
        if name in (stem, info.get("alias")):
            return rel
    raise KeyError(name)


def merge_case(ctx, out, files, nets_spec):
    nets = []
    for spec in nets_spec:
        rel = resolve(out, files, spec["name"])
        net = R.Net(spec["name"], spec["te"], spec["unet"], spec["dyn"])
        R.load_network(net, read_network_file(os.path.join(out, rel)), ctx.layers, ctx.ldm, ctx.sd2)
        nets.append((rel, net))
    merged, errors, error_layers = R.apply_networks(ctx.ldm, ctx.layers, [n for _, n in nets], ran=ctx.ran)
    changed = {k: v for k, v in merged.items() if k not in ctx.ldm or not torch.equal(v, ctx.ldm[k])}
    return nets, changed, errors, error_layers


def case_spec(name, arch, *nets):
    """nets: (name, te, unet, dyn) in prompt order."""
    return dict(name=name, arch=arch, networks=[dict(name=n, te=te, unet=u, dyn=dy) for n, te, u, dy in nets])


def merge_cases():
    c = []
    for stem in ["lora_kohya", "lora_conv", "lora_bundle", "lora_sdxl", "lora_peft", "oft_kohya", "oft_diag_old",
                 "locon", "loha", "lokr", "lokr_full", "ia3", "full", "norm", "glora", "glora_lycoris4", "diag_oft", "boft", "dora"]:
        c.append(case_spec(f"sd1_{stem}", "sd1", (stem, 1.0, 1.0, None)))
    c.append(case_spec("sd1_alias_f16", "sd1", ("compvis_alias", 0.8, 0.8, None)))
    c.append(case_spec("sd1_dyn", "sd1", ("lora_bundle", 1.0, 1.0, 1)))  # rank 2 -> first rank only
    c.append(case_spec("sd1_two_te_unet", "sd1", ("lora_kohya", 0.5, 1.2, None), ("loha", 1.0, -0.6, None)))
    c.append(case_spec("sd1_order", "sd1", ("dora", 0.7, 1.0, None), ("ia3", 1.0, 1.0, None),
                       ("glora", 1.0, 0.5, None), ("lora_kohya", 1.0, 1.0, None)))
    c.append(case_spec("sd1_oft_then_lora", "sd1", ("diag_oft", 1.0, 1.3, None), ("lora_peft", 0.4, 0.9, None)))
    # an SD1 LoRA on the inpainting model: conv_in's 4-channel updown padded to 9 input channels
    c.append(case_spec("sd1inpaint_lora_conv", "sd1-inpaint", ("lora_conv", 1.0, 0.8, None)))
    c.append(case_spec("sd2v_lora_te_unet", "sd2-v", ("lora_sd2", 0.6, 1.4, None)))
    c.append(case_spec("sd2v_partial", "sd2-v", ("lora_sd2_partial", 1.0, 1.0, None)))
    c.append(case_spec("sd2v_two", "sd2-v", ("loha_sd2", 0.7, 1.3, None), ("lora_sd2", 1.0, 0.5, None)))
    return c


E2E = [
    dict(name="e2e_sd1_txt2img_two_loras", arch="sd1", mode="txt2img", sampler="Euler a", scheduler=None, rng="CPU",
         seed=1234, steps=6, cfg=7.0, batch=1,
         prompt="a photograph of an astronaut riding a horse <lora:lora_kohya:0.6:1.5> <lora:compvis_alias:1.2:0.8>",
         negative_prompt="blurry, low quality"),
    dict(name="e2e_sd1_img2img_loha", arch="sd1", mode="img2img", sampler="DPM++ 2M", scheduler="karras", rng="CPU",
         seed=7, steps=6, cfg=7.0, batch=1, strength=0.6,
         prompt="<lora:loha:1.2:2>a photograph of an astronaut riding a horse", negative_prompt="blurry, low quality"),
    dict(name="e2e_sd2v_txt2img_lora", arch="sd2-v", mode="txt2img", sampler="Euler", scheduler=None, rng="CPU",
         seed=5, steps=5, cfg=7.0, batch=1,
         prompt="a photograph of an astronaut <lora:lora_sd2:1.3:1.5> riding a horse", negative_prompt="blurry, low quality"),
    dict(name="e2e_sd1_negative_tag", arch="sd1", mode="txt2img", sampler="Euler", scheduler=None, rng="CPU",
         seed=42, steps=5, cfg=7.0, batch=1,
         prompt="a photograph of an astronaut riding a horse <lora:lora_kohya:1>",
         negative_prompt="blurry, <lora:lora_conv:1>, low quality"),
]


def merged_models(ctx, changed):
    """Fresh copies of the reference diffusers unet / text encoder with the merged LDM tensors."""
    unet, te = copy.deepcopy(ctx.unet), copy.deepcopy(ctx.te)
    unet_map = unet_to_ldm({k: k for k in unet.state_dict()})
    inv_unet = {ldm: k for ldm, k in unet_map.items()}
    usd, tsd = unet.state_dict(), te.state_dict()
    with torch.no_grad():
        for k, v in changed.items():
            if k in inv_unet:
                usd[inv_unet[k]].copy_(v)
            elif not ctx.sd2:
                name = k[len("cond_stage_model.transformer.text_model."):]
                tsd[name].copy_(v)
            else:
                p = k[len("cond_stage_model.model.transformer.resblocks."):]
                i, rest = p.split(".", 1)
                s = f"encoder.layers.{i}."
                if rest == "attn.in_proj_weight":
                    for part, t in zip(("q", "k", "v"), v.chunk(3, 0)):
                        tsd[s + f"self_attn.{part}_proj.weight"].copy_(t)
                    continue
                m = {"attn.out_proj.": "self_attn.out_proj.", "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2.",
                     "ln_1.": "layer_norm1.", "ln_2.": "layer_norm2."}
                for a, b in m.items():
                    if rest.startswith(a):
                        tsd[s + b + rest[len(a):]].copy_(v)
                        break
                else:
                    raise KeyError(k)
    return unet.eval(), te.eval()


def tokenizers(bpe, tmp):
    out = {}
    for pad in ("sd1", "sd2"):
        d = os.path.join(tmp, pad)
        subprocess.run([sys.executable, os.path.join(HERE, "make_clip_tokenizer.py"), bpe, d, "--pad", pad], check=True,
                       stdout=subprocess.DEVNULL)
        from transformers import CLIPTokenizer
        out[pad] = CLIPTokenizer.from_pretrained(d)
    return out


def run_e2e(ctxs, out, files, bpe, cases_out):
    import make_generate_fixtures as G
    from PIL import Image
    init = Image.open(os.path.join(ROOT, "fixtures/generate/init.png")).convert("RGB")
    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        tok = tokenizers(bpe, tmp)
        for c in E2E:
            ctx = ctxs[c["arch"]]
            positive, tags = R.strip_extra_networks(c["prompt"])
            nets = []
            for kind, args in tags:
                assert kind == "lora"
                te, unet, dyn = R.parse_lora_tag(args[1:])
                nets.append((args[0], te, unet, dyn))
            spec = case_spec(c["name"], c["arch"], *nets)
            _, changed, errors, _ = merge_case(ctx, out, files, spec["networks"])
            assert not errors, errors
            unet, te = merged_models(ctx, changed)
            G._MODELS[c["arch"]] = (unet, ctx.vae, te)
            G.PROMPT, G.NEGATIVE = positive, c["negative_prompt"]
            lat, img = G.run(c, tok["sd1"], tok["sd2"], init)
            tensors[c["name"] + "/latents"] = lat
            tensors[c["name"] + "/image"] = img
            # the same render without the networks: how much they changed the picture
            G._MODELS[c["arch"]] = (ctx.unet, ctx.vae, ctx.te)
            lat0, img0 = G.run(c, tok["sd1"], tok["sd2"], init)
            dlat = float((lat - lat0).abs().max() / lat0.abs().max())
            diff = (img.float() - img0.float()).abs()
            print(f"{c['name']}: positive {positive!r}; latents std {float(lat.std()):.3f}; "
                  f"vs no networks: latents max |d|/max {dlat:.3f}, pixels mean |d| {float(diff.mean()):.2f}, max {float(diff.max()):.0f}")
            cases_out.append(dict(c, encoded_prompt=positive, networks=spec["networks"], changed=len(changed),
                                  latents_rel_change_vs_no_networks=round(dlat, 4),
                                  image_mean_abs_change_vs_no_networks=round(float(diff.mean()), 3)))
    save_file(tensors, os.path.join(out, "e2e.safetensors"))
    canonical_header(os.path.join(out, "e2e.safetensors"))


def main():
    bpe = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "fixtures/lora")
    os.makedirs(out, exist_ok=True)
    ctxs = {a: Ctx(a) for a in ARCH_SEED}
    files = {}
    files.update(make_sd1_files(ctxs["sd1"], out))
    files.update(make_sd2_files(ctxs["sd2-v"], out))
    for rel, info in files.items():
        if rel.endswith(".safetensors"):
            canonical_header(os.path.join(out, rel))
        info["arch"] = rel.split("/")[0]
        info.update(file_info(os.path.join(out, rel)))
        info["name"] = os.path.splitext(os.path.basename(rel))[0]
        info["alias"] = info["metadata"].get("ss_output_name", info["name"])
        ctx = ctxs[info["arch"]]
        net = R.Net(info["name"])
        R.load_network(net, read_network_file(os.path.join(out, rel)), ctx.layers, ctx.ldm, ctx.sd2)
        info["modules"] = sorted(net.modules)
        info["unmatched"] = sorted(net.unmatched)
        info["module_types"] = sorted({m.kind for m in net.modules.values()})
        info["bundled_embeddings"] = {
            k: {kk: list(vv.shape) if torch.is_tensor(vv) else {a: list(b.shape) for a, b in vv.items()}
                for kk, vv in v.items()} for k, v in net.bundle_embeddings.items()}
        info["size"] = os.path.getsize(os.path.join(out, rel))
    expected, cases = {}, []
    for spec in merge_cases():
        ctx = ctxs[spec["arch"]]
        nets, changed, errors, error_layers = merge_case(ctx, out, files, spec["networks"])
        for k, v in changed.items():
            expected[f"{spec['name']}/{k}"] = v.contiguous()
        rels = [ctx.ldm[k].norm() for k in changed if k in ctx.ldm]
        ratio = [float((changed[k] - ctx.ldm[k]).norm() / ctx.ldm[k].norm()) for k in changed if k in ctx.ldm]
        spec.update(
            files=[rel for rel, _ in nets],
            changed=len(changed),
            tensors=[[k, ctx.canonical.get(k, [])] for k in sorted(changed)],
            created=[k for k in sorted(changed) if k not in ctx.ldm],
            unmatched={rel: sorted(n.unmatched) for rel, n in nets},
            errors=errors,
            error_layers=[list(e) for e in error_layers],
            rel_change=[round(min(ratio), 4), round(max(ratio), 4)] if ratio else [],
        )
        del rels
        cases.append(spec)
        print(f"{spec['name']}: {len(changed)} tensors changed, errors {errors}, |dW|/|W| {spec['rel_change']}")
    save_file(expected, os.path.join(out, "expected.safetensors"))
    canonical_header(os.path.join(out, "expected.safetensors"))
    e2e = []
    run_e2e(ctxs, out, files, bpe, e2e)
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_lora_fixtures.py", "reference": "A1111 v1.10.1 extensions-builtin/Lora (restated in tools/reference/lora_ref.py)",
                   "size": 128, "networks": files, "cases": cases, "e2e": e2e}, f, indent=1)


if __name__ == "__main__":
    main()
