#!/usr/bin/env python3
"""Small PyTorch zip checkpoints for the restricted pickle reader's tests.

  good.ckpt      {"state_dict": {...}, "global_step": 7, "epoch": np scalar}: f32, f16 and bf16
                 tensors, a parameter, a transposed (non-contiguous) view, two tensors sharing
                 a storage; plus expected.safetensors with the same tensors, contiguous.
  evil.ckpt      a state dict whose pickle calls os.system (must be refused, never executed).
  evil_eval.ckpt the same with builtins.eval.

Usage: make_ckpt_fixtures.py OUT_DIR
"""
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 6, generator=g)
    shared = torch.randn(10, generator=g)
    sd = {
        "a.weight": torch.randn(3, 5, generator=g),
        "b.half": torch.randn(2, 2, 3, generator=g).half(),
        "c.bf16": torch.randn(7, generator=g).bfloat16(),
        "d.param": torch.nn.Parameter(torch.randn(2, 3, generator=g)),
        "e.transposed": base.t(),
        "f.shared0": shared[2:6],
        "f.shared1": shared[5:],
        "g.scalar": torch.tensor(1.5),
    }
    torch.save({"state_dict": sd, "global_step": 7, "epoch": np.float64(2.0)},
               os.path.join(out, "good.ckpt"))
    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, os.path.join(out, "expected.safetensors"))
    torch.save({"state_dict": {"x": torch.zeros(2)}, "payload": Evil(os.system, "echo pwned")},
               os.path.join(out, "evil.ckpt"))
    torch.save({"x": Evil(eval, "1+1")}, os.path.join(out, "evil_eval.ckpt"))
    for f in sorted(os.listdir(out)):
        print(f, os.path.getsize(os.path.join(out, f)))


if __name__ == "__main__":
    main()
