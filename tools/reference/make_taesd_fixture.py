#!/usr/bin/env python3
"""PyTorch TAESD (architecture from taesd_check.py) on the real trained weights in
../shared/data/taesd: a 128x128 crop of astronaut.png encoded, and those latents decoded, in
f32, for crates/sumi-models/tests/taesd.rs.

Usage: make_taesd_fixture.py SHARED_DATA_DIR OUT.safetensors
"""
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from taesd_check import decoder, encoder  # noqa: E402


def main():
    data, out = sys.argv[1], sys.argv[2]
    enc, dec = encoder(4, False).eval(), decoder(4, False).eval()
    enc.load_state_dict({k: v.float() for k, v in load_file(f"{data}/taesd/taesd_encoder.safetensors").items()})
    dec.load_state_dict({k: v.float() for k, v in load_file(f"{data}/taesd/taesd_decoder.safetensors").items()})
    img = np.asarray(Image.open(f"{data}/images/astronaut.png").convert("RGB"))[64:192, 160:288]
    x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        lat = enc(x)
        y = dec(lat)
    save_file({"image": x, "latents": lat.contiguous(), "decoded": y.contiguous()}, out)


if __name__ == "__main__":
    main()
