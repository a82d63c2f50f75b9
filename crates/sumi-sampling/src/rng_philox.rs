//! A1111's "NV" noise source (`modules/rng_philox.py`): CUDA-style
//! Philox4x32-10 counters with a Box-Muller transform, computed on the CPU so
//! that a seed gives the same latent noise on every machine.
//!
//! For a call with `n` elements and call number `offset` (0 for the first call
//! on a generator), element `i` runs Philox4x32-10 on counter
//! `[offset, 0, i, 0]` with key `[seed_lo, seed_hi]` and keeps the first two
//! output words `(x, y)`. Box-Muller is evaluated in double (as numpy promotes
//! `uint32 * float32` to float64) with A1111's float32 constants:
//! `u = x·c + c/2`, `v = y·c2π + c2π/2`, `sqrt(-2 ln u)·sin v`, cast to float.

const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// `np.float32(2.3283064e-10)` (about 2^-32).
const TWO_POW32_INV: f32 = 2.3283064e-10;
/// `np.float32(2.3283064e-10 * 6.2831855)`.
const TWO_POW32_INV_2PI: f32 = (2.3283064e-10_f64 * 6.2831855_f64) as f32;

/// One Philox4x32 round.
fn round(counter: &mut [u32; 4], key: [u32; 2]) {
    let v1 = counter[0] as u64 * PHILOX_M[0] as u64;
    let v2 = counter[2] as u64 * PHILOX_M[1] as u64;
    let (v1_lo, v1_hi) = (v1 as u32, (v1 >> 32) as u32);
    let (v2_lo, v2_hi) = (v2 as u32, (v2 >> 32) as u32);
    *counter = [
        v2_hi ^ counter[1] ^ key[0],
        v2_lo,
        v1_hi ^ counter[3] ^ key[1],
        v1_lo,
    ];
}

/// Philox4x32 with `rounds` rounds (A1111 uses 10).
pub fn philox4x32(mut counter: [u32; 4], mut key: [u32; 2], rounds: usize) -> [u32; 4] {
    for _ in 1..rounds {
        round(&mut counter, key);
        key[0] = key[0].wrapping_add(PHILOX_W[0]);
        key[1] = key[1].wrapping_add(PHILOX_W[1]);
    }
    round(&mut counter, key);
    counter
}

/// The first of the two Box-Muller outputs, as A1111 computes it.
fn box_muller(x: u32, y: u32) -> f32 {
    let c = TWO_POW32_INV as f64;
    let c2pi = TWO_POW32_INV_2PI as f64;
    let u = x as f64 * c + c / 2.0;
    let v = y as f64 * c2pi + c2pi / 2.0;
    let s = (-2.0 * u.ln()).sqrt();
    (s * v.sin()) as f32
}

/// A1111's Philox generator: one seed, a call counter (`offset`).
#[derive(Clone, Debug)]
pub struct PhiloxGenerator {
    seed: u64,
    offset: u32,
}

impl PhiloxGenerator {
    /// `rng_philox.Generator(seed)`.
    pub fn new(seed: u64) -> Self {
        Self { seed, offset: 0 }
    }

    /// `Generator.randn(shape)` flattened; each call advances the offset by one.
    /// Element indices wrap at 2^32 as in A1111 (`np.arange(n, dtype=np.uint32)`).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let offset = self.offset;
        self.offset = self.offset.wrapping_add(1);
        (0..n)
            .map(|i| {
                let out = philox4x32([offset, 0, i as u32, 0], key, 10);
                box_muller(out[0], out[1])
            })
            .collect()
    }
}
