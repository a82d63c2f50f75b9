"""Philox4x32-10 + Box-Muller as A1111's "NV" source computes it (numpy, float64 Box-Muller).

Written for Sumi from the semantics of A1111's modules/rng_philox.py:
counter = [offset, 0, index, 0], key = [seed_lo, seed_hi], ten rounds,
first two output words through Box-Muller with float32 constants, math in float64.
"""
import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
C = np.float64(np.float32(2.3283064e-10))
C2PI = np.float64(np.float32(2.3283064e-10 * 6.2831855))


class Philox:
    def __init__(self, seed):
        self.seed = int(seed)
        self.offset = 0

    def randn(self, n):
        c0 = np.full(n, self.offset, dtype=np.uint32)
        c1 = np.zeros(n, dtype=np.uint32)
        c2 = np.arange(n, dtype=np.uint32)
        c3 = np.zeros(n, dtype=np.uint32)
        self.offset += 1
        k0 = np.uint32(self.seed & 0xFFFFFFFF)
        k1 = np.uint32((self.seed >> 32) & 0xFFFFFFFF)
        with np.errstate(over="ignore"):
            for r in range(10):
                p0 = c0.astype(np.uint64) * M0
                p1 = c2.astype(np.uint64) * M1
                hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), p0.astype(np.uint32)
                hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), p1.astype(np.uint32)
                c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
                if r < 9:
                    k0 = np.uint32(k0 + W0)
                    k1 = np.uint32(k1 + W1)
        u = c0.astype(np.float64) * C + C / 2
        v = c1.astype(np.float64) * C2PI + C2PI / 2
        return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)
