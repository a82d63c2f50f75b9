#!/usr/bin/env python3
"""LoRA fixtures for the tiny SDXL base (fixtures/lora/sdxl/, fixtures/lora/sdxl_cases.json,
fixtures/lora/sdxl_expected.safetensors), checked by crates/sumi-pipeline/tests/sdxl_lora.rs.

The model is make_sdxl_fixtures.py's tiny SDXL base in its SGM single-file layout (the same
synthesised weights the test rebuilds from fixtures/tiny/sdxl/manifest.json). A1111 v1.10.1's
Lora extension is restated by lora_ref.py; on SDXL its network_layer_mapping names each
conditioner embedder's modules f'{i}_{name}' (networks.assign_network_names_to_compvis_modules):
CLIP-L `0_transformer_text_model_…`, bigG `1_model_transformer_resblocks_…` (an
nn.MultiheadAttention whose q, k, v, out parts A1111 merges only all four together).

Networks (random, scaled per module so that |dW|/|W| is 2e-2..8e-2, as make_lora_fixtures.py):
  * sdxl_kohya: kohya LoRA with `lora_te1_` (CLIP-L), `lora_te2_` (bigG: one attention with all
    four parts, one with q and k only, an MLP layer) and `lora_unet_` keys in SGM's compvis
    spelling (input_blocks_4_1_…, label_emb_0_0) and diffusers' (down_blocks_2_attentions_1_…),
    plus the up-level-0 upsampler, which A1111's name conversion sends to output_blocks_2_1_conv
    (SD1's numbering) and so matches nothing on SDXL;
  * sdxl_locon: LoCon (3x3 convs, one with a Tucker lora_mid, a 1x1 skip connection, the
    downsampler) and a bigG MLP layer;
  * the SD1 fixture fixtures/lora/sd1/lora_kohya.safetensors read against SDXL (an SD1 LoRA on
    an SDXL model: what matches, what fails, what A1111 leaves).

Cases: per case the SGM tensors A1111 holds after network_apply_weights (keyed
"<case>/<SGM key>", with the canonical names of fixtures/tiny/sdxl/manifest.json), its error
counts and the keys that matched nothing.

Usage: make_sdxl_lora_fixtures.py
"""
import json
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import lora_ref as R  # noqa: E402
import make_lora_fixtures as M  # noqa: E402
from make_sdxl_fixtures import build, sgm_file  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(2)
OUT = os.path.join(ROOT, "fixtures", "lora")


class Ctx:
    """The tiny SDXL base: its SGM state dict (f32) and A1111's layer mapping."""

    def __init__(self):
        self.arch, self.sd2 = "sdxl", False
        unet, vae, te1, te2 = build("sdxl")
        sd = sgm_file("sdxl", unet, vae, te1, te2)
        self.ldm = {k: v.detach().float().contiguous() for k, v in sd.items()
                    if k.startswith(("model.diffusion_model.", "conditioner.embedders."))}
        self.layers = R.layer_mapping(self.ldm, False)
        man = json.load(open(os.path.join(ROOT, "fixtures/tiny/sdxl/manifest.json")))
        self.canonical = {k: src for k, _, src, _ in man["files"]["tiny_sdxl.safetensors"]["tensors"]}
        self.ran = lambda lay: True  # SDXL runs every layer of both encoders (bigG's last for the pooled output)

    orig_for = M.Ctx.orig_for

    def shape(self, sgm_module):
        """The weight shape of a module given by its SGM path (an MHA part: a third of in_proj)."""
        if sgm_module.endswith(("attn.q", "attn.k", "attn.v")):
            w = self.ldm[sgm_module[:-2] + ".in_proj_weight"]
            return (w.shape[0] // 3, w.shape[1])
        return tuple(self.ldm[sgm_module + ".weight"].shape)


U = "model.diffusion_model."
L = "conditioner.embedders.0.transformer.text_model.encoder.layers."
G = "conditioner.embedders.1.model.transformer.resblocks."

# (kohya module name, SGM module whose weight shape it takes)
KOHYA = [
    ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", L + "0.self_attn.q_proj"),
    ("lora_te1_text_model_encoder_layers_2_mlp_fc1", L + "2.mlp.fc1"),
    ("lora_te2_text_model_encoder_layers_1_self_attn_q_proj", G + "1.attn.q"),
    ("lora_te2_text_model_encoder_layers_1_self_attn_k_proj", G + "1.attn.k"),
    ("lora_te2_text_model_encoder_layers_1_self_attn_v_proj", G + "1.attn.v"),
    ("lora_te2_text_model_encoder_layers_1_self_attn_out_proj", G + "1.attn.out_proj"),
    ("lora_te2_text_model_encoder_layers_2_self_attn_q_proj", G + "2.attn.q"),
    ("lora_te2_text_model_encoder_layers_2_self_attn_k_proj", G + "2.attn.k"),
    ("lora_te2_text_model_encoder_layers_0_mlp_fc2", G + "0.mlp.c_proj"),
    ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", U + "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("lora_unet_input_blocks_4_1_proj_in", U + "input_blocks.4.1.proj_in"),
    ("lora_unet_output_blocks_0_1_transformer_blocks_1_attn2_to_k", U + "output_blocks.0.1.transformer_blocks.1.attn2.to_k"),
    ("lora_unet_middle_block_1_transformer_blocks_1_attn2_to_v", U + "middle_block.1.transformer_blocks.1.attn2.to_v"),
    ("lora_unet_label_emb_0_0", U + "label_emb.0.0"),
    ("lora_unet_down_blocks_2_attentions_1_transformer_blocks_1_attn1_to_out_0",
     U + "input_blocks.8.1.transformer_blocks.1.attn1.to_out.0"),
    ("lora_unet_up_blocks_1_attentions_2_proj_out", U + "output_blocks.5.1.proj_out"),
    ("lora_unet_up_blocks_0_upsamplers_0_conv", U + "output_blocks.2.2.conv"),
]

LOCON = [
    ("lora_unet_input_blocks_1_0_in_layers_2", U + "input_blocks.1.0.in_layers.2", False),
    ("lora_unet_down_blocks_1_resnets_0_conv1", U + "input_blocks.4.0.in_layers.2", True),
    ("lora_unet_output_blocks_3_0_skip_connection", U + "output_blocks.3.0.skip_connection", False),
    ("lora_unet_input_blocks_3_0_op", U + "input_blocks.3.0.op", False),
    ("lora_te2_text_model_encoder_layers_2_mlp_fc1", G + "2.mlp.c_fc", False),
]


def network(ctx, gen, targets, rank, alpha):
    sd = {}
    for t in targets:
        name, sgm, tucker = (t + (False,))[:3]
        for k, v in M.lora_parts(gen, ctx.shape(sgm), rank, alpha, tucker).items():
            sd[f"{name}.{k}"] = v
    return M.calibrate(sd, ctx, gen)


CASES = [
    dict(name="sdxl_kohya", networks=[dict(name="sdxl_kohya", te=1.0, unet=1.0, dyn=None)]),
    dict(name="sdxl_locon", networks=[dict(name="sdxl_locon", te=1.0, unet=1.0, dyn=None)]),
    dict(name="sdxl_two", networks=[dict(name="sdxl_locon", te=0.8, unet=-0.5, dyn=None),
                                    dict(name="sdxl_kohya", te=1.0, unet=0.7, dyn=None)]),
    dict(name="sdxl_with_sd1_lora", networks=[dict(name="lora_kohya", te=1.0, unet=1.0, dyn=None)]),
]
FILES = {"sdxl_kohya": "sdxl/sdxl_kohya.safetensors", "sdxl_locon": "sdxl/sdxl_locon.safetensors",
         "lora_kohya": "sd1/lora_kohya.safetensors"}


def run_case(ctx, spec):
    nets, load_errors = [], {}
    for n in spec["networks"]:
        rel = FILES[n["name"]]
        net = R.Net(n["name"], n["te"], n["unet"], n["dyn"])
        try:
            R.load_network(net, M.read_network_file(os.path.join(OUT, rel)), ctx.layers, ctx.ldm, False)
        except (AssertionError, RuntimeError, ValueError) as e:  # A1111: errors.display, the network is left out
            load_errors[rel] = str(e)
            continue
        nets.append((rel, net))
    merged, errors, error_layers = R.apply_networks(ctx.ldm, ctx.layers, [n for _, n in nets], ran=ctx.ran)
    changed = {k: v for k, v in merged.items() if k not in ctx.ldm or not torch.equal(v, ctx.ldm[k])}
    spec.update(
        files=[FILES[n["name"]] for n in spec["networks"]],
        changed=len(changed),
        tensors=[[k, ctx.canonical.get(k, [])] for k in sorted(changed)],
        unmatched={rel: sorted(n.unmatched) for rel, n in nets},
        modules={rel: sorted(n.modules) for rel, n in nets},
        errors=errors,
        error_layers=[list(e) for e in error_layers],
        load_errors=load_errors,
    )
    return changed


def main():
    ctx = Ctx()
    gen = torch.Generator().manual_seed(1717)
    d = os.path.join(OUT, "sdxl")
    os.makedirs(d, exist_ok=True)
    for name, sd in (("sdxl_kohya", network(ctx, gen, KOHYA, 4, 2.0)),
                     ("sdxl_locon", network(ctx, gen, LOCON, 4, 3.0))):
        path = os.path.join(d, name + ".safetensors")
        M.save_st(sd, path, metadata={"ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "networks.lora"})
        M.canonical_header(path)
    expected, cases = {}, []
    for spec in CASES:
        changed = run_case(ctx, spec)
        for k, v in changed.items():
            expected[f"{spec['name']}/{k}"] = v.contiguous()
        cases.append(spec)
        print(f"{spec['name']}: {len(changed)} tensors changed, errors {spec['errors']}, "
              f"unmatched {sum(len(v) for v in spec['unmatched'].values())}, load errors {spec['load_errors']}")
    path = os.path.join(OUT, "sdxl_expected.safetensors")
    save_file(expected, path)
    M.canonical_header(path)
    with open(os.path.join(OUT, "sdxl_cases.json"), "w") as f:
        json.dump({"generator": "tools/reference/make_sdxl_lora_fixtures.py",
                   "reference": "A1111 v1.10.1 extensions-builtin/Lora on SDXL (restated in tools/reference/lora_ref.py)",
                   "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
