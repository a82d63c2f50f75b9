#!/usr/bin/env python3
"""Reference for token merging (crates/sumi-models/tests/tome.rs): tomesd 0.1.3 from PyPI as
A1111 v1.10.1 applies it (modules/sd_models.py `apply_token_merging`: `tomesd.apply_patch(
sd_model, ratio, use_rand=False, merge_attn=True, merge_crossattn=False, merge_mlp=False)`,
so max_downsample 1 and 2 x 2 windows).

- `merge/*`: tomesd's own `bipartite_soft_matching_random2d` on random tokens (the metric
  and the merged tokens differ, as in a block, where the metric is the block input and the
  merged tokens its norm1 output); stored are the round trip `unmerge(merge(x))` and the merged
  length (the merged sequence's row order depends on torch's unstable argsort, the round trip
  does not).
- `unet/*`: the tiny SD1 and SD2-v U-Nets (make_tiny_models.py) with every transformer block's
  forward replaced by tomesd's LDM `ToMeBlock._forward` (what A1111's LDM model runs), its
  merge functions from tomesd's own `compute_merge` with the U-Net input's latent size, on the
  diffusers block's own norm / attention / feed-forward modules. diffusers' own ToMe block
  does not run on diffusers 0.42 (it reads attributes diffusers no longer has).

Usage: make_tome_fixtures.py OUT_DIR
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from diffusers.models.attention import BasicTransformerBlock  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tomesd import merge as tome_merge, patch as tome_patch  # noqa: E402

from make_tiny_models import build  # noqa: E402
import a1111_unet  # noqa: E402

# latents that are not multiples of 8 (the 12x20 case) through the U-Net as A1111's
a1111_unet.use(True)

torch.set_num_threads(2)
ARCH_SEED = {"sd1": 100, "sd2-v": 400}  # make_tiny_models' seeds, as make_generate_fixtures.py
MERGE_CASES = [
    dict(name="grid16x16_r128", w=16, h=16, r=128, c=8),
    dict(name="grid15x9_r40", w=15, h=9, r=40, c=8),  # windows do not fit at the edges
    dict(name="grid8x6_r30", w=8, h=6, r=30, c=4),  # 30 of the 36 sources
    dict(name="grid4x4_r20", w=4, h=4, r=20, c=4),  # r over the 12 sources: capped
]
UNET_CASES = [
    dict(name="sd1_r05_16x16", arch="sd1", ratio=0.5, h=16, w=16, seed=1),
    dict(name="sd1_r03_12x20", arch="sd1", ratio=0.3, h=12, w=20, seed=2),
    dict(name="sd2v_r05_16x16", arch="sd2-v", ratio=0.5, h=16, w=16, seed=3),
]
TOME = {"size": None, "args": dict(ratio=0.5, max_downsample=1, sx=2, sy=2, use_rand=False,
                                   generator=None, merge_attn=True, merge_crossattn=False,
                                   merge_mlp=False)}


def tome_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, **kw):
    """tomesd's ToMeBlock._forward (the LDM block A1111 patches) over a diffusers block."""
    x, context = hidden_states, encoder_hidden_states
    m_a, m_c, m_m, u_a, u_c, u_m = tome_patch.compute_merge(x, TOME)
    x = u_a(self.attn1(m_a(self.norm1(x)))) + x
    x = u_c(self.attn2(m_c(self.norm2(x)), encoder_hidden_states=context)) + x
    x = u_m(self.ff(m_m(self.norm3(x)))) + x
    return x


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tensors = {}
    g = torch.Generator().manual_seed(7)
    for c in MERGE_CASES:
        n = c["w"] * c["h"]
        metric = torch.randn(2, n, c["c"], generator=g)
        x = torch.randn(2, n, c["c"], generator=g)
        m, u = tome_merge.bipartite_soft_matching_random2d(metric, c["w"], c["h"], 2, 2, c["r"], no_rand=True)
        merged = m(x)
        c["merged_len"] = merged.shape[1]
        tensors[f"merge/{c['name']}/metric"] = metric
        tensors[f"merge/{c['name']}/x"] = x
        tensors[f"merge/{c['name']}/roundtrip"] = u(merged).contiguous()
        print(c["name"], tuple(merged.shape))
    BasicTransformerBlock.forward = tome_forward
    for c in UNET_CASES:
        unet, _, _ = build(c["arch"], ARCH_SEED[c["arch"]])
        gen = torch.Generator().manual_seed(c["seed"])
        x = torch.randn(2, 4, c["h"], c["w"], generator=gen)
        ctx_dim = unet.config.cross_attention_dim
        ctx = torch.randn(2, 77, ctx_dim, generator=gen)
        t = torch.tensor([500.0, 120.0])
        TOME["size"] = (c["h"], c["w"])
        with torch.no_grad():
            TOME["args"]["ratio"] = c["ratio"]
            merged = unet(x, t, encoder_hidden_states=ctx).sample
            TOME["args"]["ratio"] = 0.0
            plain = unet(x, t, encoder_hidden_states=ctx).sample
        for k, v in (("x", x), ("t", t), ("ctx", ctx), ("out", merged)):
            tensors[f"unet/{c['name']}/{k}"] = v.contiguous()
        c["moved"] = float((merged - plain).abs().max())
        print(c["name"], c["moved"])
    save_file(tensors, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"merge": MERGE_CASES, "unet": UNET_CASES}, f, indent=1)


if __name__ == "__main__":
    main()
