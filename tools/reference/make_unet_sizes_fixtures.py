"""U-Net and VAE at sizes that are not multiples of 64 pixels, as A1111 v1.10.1 runs them.

The tiny diffusers U-Net (tools/reference/make_tiny_models.py) runs A1111's way
(a1111_unet.py: `TorchHijackForUnet.cat` of modules/sd_hijack_unet.py, x2 upsampling), and once
the diffusers way for comparison.

Inputs come from `synth` (so only outputs are stored): x = 16 * synth("sizes.x.HxW", [n]),
context = 16 * synth("sizes.context", [5 * 64]) as [1, 5, 64], t = 500.
Cases: 600x400 pixels (latent 50x75) and 200x136 (latent 17x25), for sd1 and sd2.
Also the VAE (sd1's; every tiny model has the same VAE): encode of a 136x200 image
(synth("sizes.image", [3 * 136 * 200]), values in [-1/16, 1/16]) -> mean/logvar 17x25, and
decode of z = 16 * synth("sizes.z", [4 * 17 * 25]) (in [-1, 1]), stored at every 4th row and
column. Each case also prints how far the diffusers way is from A1111's.

Usage: python make_unet_sizes_fixtures.py fixtures/unet_sizes
"""

import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import a1111_unet
from make_tiny_models import ARCHS, HID, build
from synth_weights import synth

torch.set_num_threads(2)
CASES = {"600x400": (50, 75), "200x136": (17, 25)}


def s16(name, n):
    return torch.from_numpy(synth(name, [n]).astype(np.float32) * 16)


def main(out):
    os.makedirs(out, exist_ok=True)
    ctx = s16("sizes.context", 5 * HID).reshape(1, 5, HID)
    t = torch.tensor([500.0])
    for i, arch in enumerate(ARCHS):
        if arch not in ("sd1", "sd2"):
            continue
        unet, vae, _ = build(arch, 100 * (i + 1))
        r = {}
        with torch.no_grad():
            for name, (h, w) in CASES.items():
                x = s16(f"sizes.x.{h}x{w}", 4 * h * w).reshape(1, 4, h, w)
                a1111_unet.use(True)
                r[f"unet_{name}"] = unet(x, t, encoder_hidden_states=ctx).sample
                a1111_unet.use(False)
                diffusers = unet(x, t, encoder_hidden_states=ctx).sample
                d = float((diffusers - r[f"unet_{name}"]).abs().max())
                print(arch, name, "A1111 vs diffusers way: max |diff|", f"{d:.3e}",
                      "max |out|", f"{float(r[f'unet_{name}'].abs().max()):.3e}")
                if name == "200x136":
                    r[f"unet_{name}_diffusers_way"] = diffusers
            if arch == "sd1":
                img = s16("sizes.image", 3 * 136 * 200).reshape(1, 3, 136, 200) / 16
                moments = vae.quant_conv(vae.encoder(img))
                r["vae_mean"], r["vae_logvar"] = moments.chunk(2, dim=1)
                z = s16("sizes.z", 4 * 17 * 25).reshape(1, 4, 17, 25)
                r["vae_decoded_every4"] = vae.decode(z).sample[:, :, ::4, ::4]
        r = {k: v.float().contiguous() for k, v in r.items()}
        save_file(r, os.path.join(out, f"{arch}.safetensors"))
        print(arch, {k: list(v.shape) for k, v in r.items()})


if __name__ == "__main__":
    main(sys.argv[1])
