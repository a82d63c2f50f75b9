//! torch's CPU generator, bit for bit: `torch.Generator().manual_seed(seed)` and
//! `torch.randn(shape, generator=g)` for float32.
//!
//! * Engine: 32-bit Mersenne Twister (mt19937), seeded with the low 32 bits of
//!   the 64-bit seed, as `at::mt19937`.
//! * `randn` for a contiguous float32 tensor of **16 or more** elements takes
//!   torch's vectorised path (`normal_fill`): one float uniform per element
//!   (24-bit mantissa from one 32-bit draw), then Box-Muller on blocks of 16
//!   (`u1 = 1 - data[j]`, `u2 = data[j + 8]`, cos to `j`, sin to `j + 8`); if
//!   the count is not a multiple of 16 the last 16 are redrawn and recomputed.
//!   On AVX2/AVX512 machines (torch never dispatches `normal_` to AVX512) the
//!   math is `avx_mathfun`'s float32 Cephes log/sincos, ported in
//!   the private `avx_mathfun` module.
//!   CPUs without AVX2 run torch's portable kernel instead (C-library float
//!   `log`/`cos`/`sin`), which gives different float32 bits for roughly 40% of
//!   the elements: the same seed gives different "CPU" noise on such machines.
//!   [`TorchCpuKernel`] selects which one to imitate.
//! * Fewer than 16 elements take the scalar path: `normal_distribution<double>`
//!   per element, Box-Muller in double on two 53-bit uniforms
//!   (`r = sqrt(-2 log1p(-u2))`, `θ = 2π u1`, return `r cos θ`, cache `r sin θ`
//!   for the next scalar draw), cast to float.

use crate::avx_mathfun::{log_ps, sincos_ps};

const MT_N: usize = 624;
const MT_M: usize = 397;

/// The 32-bit Mersenne Twister as torch seeds and steps it.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; MT_N],
    index: usize,
}

impl Mt19937 {
    /// Seeds the engine like `at::mt19937(seed)`: only the low 32 bits count.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = (seed & 0xffff_ffff) as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, index: MT_N }
    }

    fn twist(&mut self) {
        for i in 0..MT_N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % MT_N] & 0x7fff_ffff);
            let mut next = self.state[(i + MT_M) % MT_N] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// Next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// torch's `random64()`: the first 32-bit draw is the high half.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }
}

/// Which implementation of torch's vectorised normal kernel to imitate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TorchCpuKernel {
    /// AVX2 build (also what AVX512 machines run): float32 Cephes log/sincos.
    #[default]
    Avx2,
    /// The portable `normal_fill` (CPUs without AVX2): float `std::log`, `std::cos`,
    /// `std::sin` from the C library. Bit-exact only where the C library matches.
    Portable,
}

/// A torch CPU generator (`torch.Generator('cpu')`) producing float32 normals.
#[derive(Clone)]
pub struct TorchCpuGenerator {
    engine: Mt19937,
    next_double_normal: Option<f64>,
    kernel: TorchCpuKernel,
}

impl TorchCpuGenerator {
    /// `torch.Generator().manual_seed(seed)` (negative Python seeds wrap to u64).
    pub fn new(seed: u64) -> Self {
        Self::with_kernel(seed, TorchCpuKernel::default())
    }

    /// As [`TorchCpuGenerator::new`], imitating a specific normal kernel.
    pub fn with_kernel(seed: u64, kernel: TorchCpuKernel) -> Self {
        Self {
            engine: Mt19937::new(seed),
            next_double_normal: None,
            kernel,
        }
    }

    /// Float uniform in `[0, 1)`: 24 low bits of one 32-bit draw.
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Double uniform in `[0, 1)`: 53 low bits of one 64-bit draw.
    fn uniform_f64(&mut self) -> f64 {
        (self.engine.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One `normal_distribution<double>` draw (the scalar path), with torch's cache.
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    fn normal_fill_16(&self, data: &mut [f32]) {
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        for j in 0..8 {
            let u1 = 1.0 - data[j];
            let u2 = data[j + 8];
            match self.kernel {
                TorchCpuKernel::Avx2 => {
                    let radius = (-2.0 * log_ps(u1)).sqrt();
                    let theta = two_pi * u2;
                    let (sin, cos) = sincos_ps(theta);
                    data[j] = radius * cos;
                    data[j + 8] = radius * sin;
                }
                TorchCpuKernel::Portable => {
                    let radius = (-2.0 * u1.ln()).sqrt();
                    let theta = ((2.0f32 as f64) * std::f64::consts::PI * u2 as f64) as f32;
                    data[j] = radius * theta.cos();
                    data[j + 8] = radius * theta.sin();
                }
            }
        }
    }

    /// `torch.randn(n, generator=self)` for float32, flattened (shape does not
    /// matter to torch, only the element count).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            self.normal_fill_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = n - 16;
            for v in &mut data[tail..] {
                *v = self.uniform_f32();
            }
            let mut block = [0f32; 16];
            block.copy_from_slice(&data[tail..]);
            self.normal_fill_16(&mut block);
            data[tail..].copy_from_slice(&block);
        }
        data
    }
}
