//! The AVX-512 BF16 micro-kernel of [`gemm_bf16`](super::gemm_bf16): one `MR`×`NR` (12×32)
//! tile of C in 24 zmm accumulators, written in assembly so that every A value is broadcast
//! by the `vdpbf16ps` that uses it (`{1to16}` memory operand) instead of by a separate
//! broadcast instruction, which cost ~5% of the tile's throughput. What the accumulators are
//! added to on the way out (C itself, nothing, a bias per row, a bias per column) is chosen
//! per call; partial tiles are computed into a local buffer and finished in Rust. On this
//! project's Zen 4 machine a tile in L1 runs at 234 GFLOP/s per core, the instruction's peak.

use std::arch::asm;

use super::gemm_bf16::{TileInit, MR, NR};

/// Zeroes the 24 accumulators.
macro_rules! zero_acc {
    () => {
        concat!(
            "vxorps zmm0, zmm0, zmm0\n",
            "vxorps zmm1, zmm1, zmm1\n",
            "vxorps zmm2, zmm2, zmm2\n",
            "vxorps zmm3, zmm3, zmm3\n",
            "vxorps zmm4, zmm4, zmm4\n",
            "vxorps zmm5, zmm5, zmm5\n",
            "vxorps zmm6, zmm6, zmm6\n",
            "vxorps zmm7, zmm7, zmm7\n",
            "vxorps zmm8, zmm8, zmm8\n",
            "vxorps zmm9, zmm9, zmm9\n",
            "vxorps zmm10, zmm10, zmm10\n",
            "vxorps zmm11, zmm11, zmm11\n",
            "vxorps zmm12, zmm12, zmm12\n",
            "vxorps zmm13, zmm13, zmm13\n",
            "vxorps zmm14, zmm14, zmm14\n",
            "vxorps zmm15, zmm15, zmm15\n",
            "vxorps zmm16, zmm16, zmm16\n",
            "vxorps zmm17, zmm17, zmm17\n",
            "vxorps zmm18, zmm18, zmm18\n",
            "vxorps zmm19, zmm19, zmm19\n",
            "vxorps zmm20, zmm20, zmm20\n",
            "vxorps zmm21, zmm21, zmm21\n",
            "vxorps zmm22, zmm22, zmm22\n",
            "vxorps zmm23, zmm23, zmm23\n",
        )
    };
}

/// Row `r`'s two dot products for one pair of k: accumulators `lo`, `hi`, A at byte `off`.
macro_rules! dot_row {
    ($lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vdpbf16ps zmm",
            $lo,
            ", zmm24, dword ptr [{a} + ",
            $off,
            "]{{1to16}}\n",
            "vdpbf16ps zmm",
            $hi,
            ", zmm25, dword ptr [{a} + ",
            $off,
            "]{{1to16}}\n",
        )
    };
}

/// The k loop: `kc` pairs, A advancing 48 bytes and B 128 bytes per pair, each prefetched
/// 8 pairs ahead (a convolution's weights stream from memory at 16×16: 5% faster measured).
macro_rules! k_loop {
    () => {
        concat!(
            "test {kc}, {kc}\n",
            "jz 3f\n",
            ".p2align 5\n",
            "2:\n",
            "vmovups zmm24, zmmword ptr [{b}]\n",
            "vmovups zmm25, zmmword ptr [{b} + 64]\n",
            "prefetcht0 [{a} + 384]\n",
            "prefetcht0 [{b} + 1024]\n",
            "prefetcht0 [{b} + 1088]\n",
            dot_row!("0", "1", "0"),
            dot_row!("2", "3", "4"),
            dot_row!("4", "5", "8"),
            dot_row!("6", "7", "12"),
            dot_row!("8", "9", "16"),
            dot_row!("10", "11", "20"),
            dot_row!("12", "13", "24"),
            dot_row!("14", "15", "28"),
            dot_row!("16", "17", "32"),
            dot_row!("18", "19", "36"),
            dot_row!("20", "21", "40"),
            dot_row!("22", "23", "44"),
            "add {a}, 48\n",
            "sub {b}, -128\n",
            "dec {kc}\n",
            "jnz 2b\n",
            "3:\n",
        )
    };
}

/// Writes row `r` of the tile (accumulators `lo`, `hi`) to C and steps to the next row;
/// `$add` names what is added first.
macro_rules! store_row {
    (acc, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vaddps zmm",
            $lo,
            ", zmm",
            $lo,
            ", zmmword ptr [{c}]\n",
            "vaddps zmm",
            $hi,
            ", zmm",
            $hi,
            ", zmmword ptr [{c} + 64]\n",
            store_row!(none, $lo, $hi, $off),
        )
    };
    (row, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vaddps zmm",
            $lo,
            ", zmm",
            $lo,
            ", dword ptr [{bias} + ",
            $off,
            "]{{1to16}}\n",
            "vaddps zmm",
            $hi,
            ", zmm",
            $hi,
            ", dword ptr [{bias} + ",
            $off,
            "]{{1to16}}\n",
            store_row!(none, $lo, $hi, $off),
        )
    };
    (col, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vaddps zmm",
            $lo,
            ", zmm",
            $lo,
            ", zmmword ptr [{bias}]\n",
            "vaddps zmm",
            $hi,
            ", zmm",
            $hi,
            ", zmmword ptr [{bias} + 64]\n",
            store_row!(none, $lo, $hi, $off),
        )
    };
    (none, $lo:literal, $hi:literal, $off:literal) => {
        concat!(
            "vmovups zmmword ptr [{c}], zmm",
            $lo,
            "\n",
            "vmovups zmmword ptr [{c} + 64], zmm",
            $hi,
            "\n",
            "add {c}, {ldc}\n",
        )
    };
}

macro_rules! store_tile {
    ($mode:ident) => {
        concat!(
            store_row!($mode, "0", "1", "0"),
            store_row!($mode, "2", "3", "4"),
            store_row!($mode, "4", "5", "8"),
            store_row!($mode, "6", "7", "12"),
            store_row!($mode, "8", "9", "16"),
            store_row!($mode, "10", "11", "20"),
            store_row!($mode, "12", "13", "24"),
            store_row!($mode, "14", "15", "28"),
            store_row!($mode, "16", "17", "32"),
            store_row!($mode, "18", "19", "36"),
            store_row!($mode, "20", "21", "40"),
            store_row!($mode, "22", "23", "44"),
        )
    };
}

/// Prefetches the tile's rows of C (two lines each), which the epilogue reads.
macro_rules! prefetch_c {
    () => {
        concat!(
            "mov {t}, {c}\n",
            "mov {kc2:e}, 12\n",
            "4:\n",
            "prefetcht0 [{t}]\n",
            "prefetcht0 [{t} + 64]\n",
            "add {t}, {ldc}\n",
            "dec {kc2:e}\n",
            "jnz 4b\n",
        )
    };
}

/// One tile asm block: `$pre` before the loop, `$mode` the epilogue.
macro_rules! tile {
    ($kc:expr, $a:expr, $b:expr, $c:expr, $ldc:expr, $bias:expr, $pre:expr, $mode:ident) => {
        asm!(
            $pre,
            zero_acc!(),
            k_loop!(),
            store_tile!($mode),
            "/* {bias} {t} {kc2} */",
            a = inout(reg) $a => _,
            b = inout(reg) $b => _,
            kc = inout(reg) $kc => _,
            c = inout(reg) $c => _,
            ldc = in(reg) $ldc,
            bias = in(reg) $bias,
            t = out(reg) _,
            kc2 = out(reg) _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
            out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
            out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
            out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
            out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
            out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
            out("zmm24") _, out("zmm25") _,
            options(nostack),
        )
    };
}

/// `C[r][j] = init(r, j) + Σ_q A·B` for one tile: `kc` pairs of k from panels `a` (`kc·MR`
/// pairs) and `b` (`kc·NR` pairs), `rows`×`cols` of C at `c` with row stride `ldc`.
///
/// # Safety
/// The CPU has `avx512f` and `avx512bf16`; the panels hold `kc` pairs; C's `rows`×`cols`
/// elements (and the bias entries `init` names) are valid, C's exclusively ours.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile(
    kc: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    init: TileInit,
) {
    if rows == MR && cols == NR {
        let ldc_bytes = ldc * 4;
        // SAFETY: full tile: 12 rows of 32 floats at c (stride ldc) are ours; the bias has
        // 12 (row) or 32 (column) entries from its pointer; panels as the caller vouches.
        unsafe {
            match init {
                TileInit::Accumulate => {
                    tile!(kc, a, b, c, ldc_bytes, 0usize, prefetch_c!(), acc)
                }
                TileInit::Zero => tile!(kc, a, b, c, ldc_bytes, 0usize, "", none),
                TileInit::RowBias(p) => tile!(kc, a, b, c, ldc_bytes, p, "", row),
                TileInit::ColBias(p) => tile!(kc, a, b, c, ldc_bytes, p, "", col),
            }
        }
        return;
    }
    let mut buf = [0f32; MR * NR];
    // SAFETY: buf is a full tile with stride NR.
    unsafe { tile!(kc, a, b, buf.as_mut_ptr(), NR * 4, 0usize, "", none) };
    // SAFETY: rows×cols of C and the init's entries are valid (caller).
    unsafe { super::gemm_bf16::finish_partial(&buf, c, ldc, rows, cols, init) };
}
