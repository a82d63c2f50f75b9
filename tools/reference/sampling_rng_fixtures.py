"""RNG fixtures for sumi-sampling: torch CPU randn and A1111's Philox ("NV") source.

Every call records the first values and the last 16 as float32 bit patterns plus
an FNV-1a 64 hash over all bit patterns (so big tensors stay small on disk).
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch

from sampling_philox_ref import Philox

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def fnv1a_u32(words):
    h = FNV_OFFSET
    for w in words.tolist():
        h ^= w
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def summarize(arr):
    bits = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1).view(np.uint32)
    return {
        "n": int(bits.size),
        "head": bits[:64].tolist(),
        "tail": bits[-16:].tolist(),
        "fnv1a": fnv1a_u32(bits),
    }


SEEDS = [0, 1, 42, 1234, 3000000000, 4294967295, 2**32 + 7]
SHAPES = [(1,), (2, 3), (3, 5), (15,), (16,), (17,), (33,), (4, 64, 64), (4, 96, 64), (1, 4, 64, 64)]
SEQUENCES = [
    [(3,), (3,), (20,), (1,), (5,)],
    [(4, 64, 64), (4, 64, 64), (7,)],
    [(1,), (17,), (1,)],
]


def torch_cpu_cases():
    cases = []
    for seed in SEEDS:
        for shape in SHAPES:
            g = torch.Generator().manual_seed(seed)
            cases.append({"seed": seed, "calls": [list(shape)], "out": [summarize(torch.randn(shape, generator=g).numpy())]})
    for seq in SEQUENCES:
        for seed in (0, 1234):
            g = torch.Generator().manual_seed(seed)
            outs = [summarize(torch.randn(s, generator=g).numpy()) for s in seq]
            cases.append({"seed": seed, "calls": [list(s) for s in seq], "out": outs})
    return cases


def philox_cases():
    cases = []
    for seed in SEEDS[:-1] + [2**40 + 3]:
        for shape in SHAPES:
            n = int(np.prod(shape))
            cases.append({"seed": seed, "calls": [list(shape)], "out": [summarize(Philox(seed).randn(n))]})
    for seq in SEQUENCES:
        g = Philox(7)
        outs = [summarize(g.randn(int(np.prod(s)))) for s in seq]
        cases.append({"seed": 7, "calls": [list(s) for s in seq], "out": outs})
    return cases


def torch_cpu_default_cases():
    """The same draws from torch's DEFAULT (non-AVX2) kernels, in a child process
    with ATEN_CPU_CAPABILITY=default (what CPUs without AVX2 run)."""
    code = (
        "import json, sys, torch\n"
        "sys.path.insert(0, %r)\n"
        "import sampling_rng_fixtures as m\n"
        "assert torch.backends.cpu.get_cpu_capability() == 'DEFAULT'\n"
        "cases = []\n"
        "for seed in (0, 42, 3000000000):\n"
        "    for shape in [(16,), (17,), (4, 64, 64), (4, 96, 64)]:\n"
        "        g = torch.Generator().manual_seed(seed)\n"
        "        cases.append({'seed': seed, 'calls': [list(shape)], 'out': [m.summarize(torch.randn(shape, generator=g).numpy())]})\n"
        "print(json.dumps(cases))\n"
    ) % os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def make():
    return {"torch_cpu": torch_cpu_cases(), "torch_cpu_default_kernel": torch_cpu_default_cases(),
            "philox": philox_cases(), "torch_version": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
