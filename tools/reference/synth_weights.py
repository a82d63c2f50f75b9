"""Deterministic synthetic weights shared with Sumi's Rust side (sumi_testkit::synth).

Every tensor's values come from its canonical name alone (a diffusers-style name under
`unet.`, `vae.` or `text_encoder.`), so a test can rebuild a checkpoint of any layout from a
small manifest instead of committing megabytes of random numbers.

  seed   = FNV-1a 64 of the UTF-8 name
  u_i    = (splitmix64(seed + i) >> 40) / 2**24            (exact, in [0, 1))
  value  = centre + scale * (2 u_i - 1), rounded to f16     (scale a power of two)
  1-D "*.weight" (norm gains): centre 1, scale 2**-3; 1-D biases: centre 0, scale 2**-4;
  other tensors: centre 0, scale 2**-round(log2(sqrt(fan_in))), fan_in = numel / shape[0].
"""
import math

import numpy as np

M64 = (1 << 64) - 1


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(x):
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        z = x
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def centre_scale(name, shape):
    if len(shape) == 1:
        return (1.0, 2.0 ** -3) if name.endswith(".weight") else (0.0, 2.0 ** -4)
    numel = int(np.prod(shape)) if shape else 1
    fan_in = max(1, numel // shape[0]) if shape else 1
    return 0.0, 2.0 ** -round(math.log2(math.sqrt(fan_in)))


def synth(name, shape):
    """f16 numpy array for canonical tensor `name` of `shape`."""
    n = int(np.prod(shape)) if shape else 1
    with np.errstate(over="ignore"):
        idx = np.uint64(fnv1a64(name)) + np.arange(n, dtype=np.uint64)
    u = (splitmix64(idx) >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    c, s = centre_scale(name, shape)
    return (c + s * (2.0 * u - 1.0)).astype(np.float16).reshape(shape)


def checksum(arr):
    """First 16 hex digits of the sha256 of a tensor's little-endian bytes (manifest check)."""
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()[:16]
