#!/usr/bin/env python3
"""torch.nn.functional.interpolate on the CPU in float32, as A1111 v1.10.1's hires fix calls it
for its six latent upscale modes (modules/shared.py `latent_upscale_modes`), for
crates/sumi-models/tests/interpolate.rs.

Random N(0, 1) NCHW inputs (seed fixed) resized to: 2x, 1.5x, 1.25x, odd sizes, unequal factors
per axis, one axis unchanged, the same size, 0.5x, ~0.7x, a heavy downscale, a 1x1 output, a 1x1
input; sizes on both sides of torch's `out_h + out_w <= 128` switch between its channels-last
and generic kernels (they round differently); 20 channels (torch's 16-lane vector path plus a
scalar tail); and a 2 -> 41 / 2 -> 141 pair where the two kernels' nearest-exact indices differ.
Every case in every mode. The bits depend on torch's CPU capability (AVX-512 here; recorded).

Usage: make_interpolate_fixtures.py OUT_DIR   (writes cases.safetensors and cases.json)
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# A1111 v1.10.1 modules/shared.py, in its order.
MODES = [
    ("Latent", "bilinear", False),
    ("Latent (antialiased)", "bilinear", True),
    ("Latent (bicubic)", "bicubic", False),
    ("Latent (bicubic antialiased)", "bicubic", True),
    ("Latent (nearest)", "nearest", False),
    ("Latent (nearest-exact)", "nearest-exact", False),
]

INPUTS = {
    "a": (2, 4, 8, 8),
    "b": (1, 4, 7, 5),
    "c": (1, 4, 3, 50),
    "d": (1, 2, 40, 3),
    "e": (1, 1, 64, 64),
    "f": (1, 20, 5, 5),
    "g": (1, 4, 1, 1),
    "h": (1, 4, 2, 2),
}

# (input, out_h, out_w)
SIZES = [
    ("a", 16, 16),  # 2x
    ("a", 12, 12),  # 1.5x
    ("a", 10, 10),  # 1.25x
    ("a", 4, 4),  # 0.5x
    ("a", 1, 1),  # 1x1 output
    ("a", 8, 13),  # height unchanged
    ("b", 13, 9),  # odd sizes
    ("b", 5, 3),  # ~0.7x
    ("b", 14, 6),  # unequal factors (2x, 1.2x)
    ("b", 7, 5),  # same size
    ("c", 2, 127),  # generic kernel (2 + 127 > 128)
    ("d", 125, 4),  # generic kernel, tall
    ("e", 9, 20),  # heavy downscale (7.1x, 3.2x)
    ("f", 7, 7),  # 16 vector channels + 4 scalar ones
    ("g", 3, 2),  # 1x1 input (channels-last contiguous)
    ("g", 1, 128),  # 1x1 input, channels-last kernel past the size switch
    ("h", 2, 41),  # nearest-exact, channels-last kernel
    ("h", 1, 141),  # nearest-exact, generic kernel
]


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(20261206)
    tensors, cases = {}, []
    for name, shape in INPUTS.items():
        tensors[f"input/{name}"] = torch.randn(*shape, generator=gen)
    for mode_name, mode, aa in MODES:
        for inp, oh, ow in SIZES:
            x = tensors[f"input/{inp}"]
            y = F.interpolate(x, size=(oh, ow), mode=mode, antialias=aa)
            key = f"out/{len(cases)}"
            tensors[key] = y.contiguous()
            cases.append([mode_name, inp, oh, ow, key])
    save_file(tensors, os.path.join(out_dir, "cases.safetensors"))
    doc = {
        "generator": "tools/reference/make_interpolate_fixtures.py",
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cases": cases,
    }
    # one case a line
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in doc.items() if k != "cases"]
    lines += [' "cases": [', ",\n".join("  " + json.dumps(c) for c in cases), " ]", "}"]
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
